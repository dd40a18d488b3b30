"""A job that finds no cluster starts a local Ray set up as a cluster's nodes are (mtl.runtime.cluster)."""

import os
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.ray

# Tasks that reserve no CPU, run while an actor holds every CPU: the raylet's default keeps no idle
# worker then, so each is ended a second after its task. Prints how many of the tasks' processes
# are still alive seconds later.
IDLE_WORKERS_SCRIPT = """
import os
import time

import ray

from mtl.runtime.cluster import connect

connect()


@ray.remote(num_cpus=0)
def pause() -> int:
    time.sleep(1.0)
    return os.getpid()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@ray.remote
class Holder:
    def ready(self) -> bool:
        return True


holder = Holder.options(num_cpus=ray.available_resources()["CPU"]).remote()
ray.get(holder.ready.remote())
workers = set(ray.get([pause.remote() for _ in range(6)]))
time.sleep(3)
print(len(workers), sum(alive(pid) for pid in workers))
"""


def idle_workers_kept(environment: dict) -> tuple[int, int]:
    """(worker processes the tasks ran in, how many of them were kept idle), in a local Ray that
    ``connect`` starts in a process of its own."""
    run = subprocess.run([sys.executable, "-c", IDLE_WORKERS_SCRIPT], cwd=REPO, capture_output=True, text=True,
                         timeout=180, env={**environment, "RAY_ADDRESS": "local", "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr
    started, kept = run.stdout.split()[-2:]
    return int(started), int(kept)


def test_a_local_ray_keeps_idle_workers_for_the_tasks_beside_the_actors():
    environment = {name: value for name, value in os.environ.items() if name != "RAY_num_workers_soft_limit"}
    started, kept = idle_workers_kept(environment)
    assert started >= 3 and kept == started
    # what Ray does by default, which the setting changes: none kept
    assert idle_workers_kept({**environment, "RAY_num_workers_soft_limit": "-1"})[1] == 0
