"""How this product's Ray nodes are set up, wherever Ray starts: cluster.yaml and the KubeRay manifests
start each node with ``NODE_ENVIRONMENT`` (a test keeps them equal to it), and a job that finds no
cluster starts a local Ray with it."""

from __future__ import annotations

import os

import ray

from mtl.runtime.progress import quiet_output

#: Ray keeps as many idle worker processes on a node as the node has CPUs unreserved, and ends the
#: rest a second after their task. A label job's actors reserve the CPUs they compute on, so Ray Data's
#: read, repartition and write tasks kept finding no idle process and starting a new one, which
#: imports Ray, Ray Data and pyarrow again (0.3-1.4 CPU-s each, several per 20,000-sentence job on 2
#: CPUs: docs/benchmarks.md). Eight idle processes a node cover the tasks a job keeps in flight.
NODE_ENVIRONMENT = {"RAY_num_workers_soft_limit": "8"}


def connect(verbose: bool = False) -> None:
    """Join the Ray cluster (``RAY_ADDRESS``, or one running on this machine), or start a local one
    whose node is set up as a cluster's; Ray's own output stays quiet unless ``verbose``."""
    for name, value in NODE_ENVIRONMENT.items():
        # read by the raylet a local start launches; a running cluster keeps what its nodes started with
        os.environ.setdefault(name, value)
    ray.init(ignore_reinit_error=True, **quiet_output(verbose))
