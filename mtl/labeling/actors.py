"""The labeler actor pool: how many actors, what each reserves from Ray and how many torch threads
it runs, sized to the cluster it runs on.
"""

from __future__ import annotations

from dataclasses import dataclass

import ray
import ray.data

from mtl import storage
from mtl.labeling.options import LabelOptions

# reading and writing Parquet is light next to the model: a quarter CPU each leaves the labeler
# actors the cores without starving the readers that feed them
IO_CPUS = 0.25
# Ray Data's streaming repartition runs tasks that each ask for a whole CPU
REPARTITION_CPUS = 1.0


@dataclass(frozen=True)
class ActorPlan:
    """How many labeler actors, what each reserves from Ray, and how many torch threads each runs."""

    min_actors: int
    max_actors: int
    cpus: float
    gpus: int
    threads: int | None


def plan_actors(options: LabelOptions, node_cpus: list[float], cluster_gpus: float) -> ActorPlan:
    """The actor pool for a cluster whose nodes have ``node_cpus`` cores and ``cluster_gpus`` GPUs.

    On GPUs: an actor per GPU. On CPUs: an actor per core with one torch thread each, since a small
    encoder's matrices split poorly over threads (two one-thread actors beat one two-thread actor:
    docs/benchmarks.md). Actors then reserve less than a whole CPU each,
    which keeps room for the repartition (a CPU), a reader and a writer: without it the pipeline
    stalls once the actors hold every CPU.
    """
    use_gpu = options.use_gpu if options.use_gpu is not None else cluster_gpus > 0
    cores = int(max(node_cpus, default=1))
    default_actors = int(cluster_gpus) if use_gpu else sum(int(cpus) for cpus in node_cpus)
    max_actors = max(options.max_actors or default_actors, options.min_actors or 1, 1)
    min_actors = options.min_actors or max_actors
    actors_per_node = max(1, min(max_actors, cores))
    if options.cpus_per_actor is not None:
        cpus = options.cpus_per_actor
    elif use_gpu:
        cpus = 1.0
    else:
        cpus = min(1.0, max(0.0, (cores - REPARTITION_CPUS - 2 * IO_CPUS) / actors_per_node))
    threads = options.threads_per_actor or (None if use_gpu else max(1, cores // actors_per_node))
    return ActorPlan(min_actors, max_actors, round(cpus, 4), 1 if use_gpu else 0, threads)


def cluster_plan(options: LabelOptions) -> ActorPlan:
    """The actors ``options`` get on the running cluster: its live nodes' CPUs and its GPUs."""
    node_cpus = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]]
    return plan_actors(options, node_cpus, ray.cluster_resources().get("GPU", 0))


def labeler_arguments(options: LabelOptions, fmt: str, threads: int | None) -> dict:
    return {"model": storage.absolute(options.model),
            "text_column": None if options.tokens_column else options.text_column,
            "tokens_column": options.tokens_column, "tasks": list(options.tasks) if options.tasks else None,
            "embedding": options.embedding, "embedding_dtype": options.embedding_dtype,
            "model_batch_size": options.model_batch_size, "max_length": options.max_length,
            "backend": options.backend, "precision": options.precision,
            "threads": threads, "json_lines": fmt == "jsonl"}
