"""Who is labeling an output: the Ray job of each attempt, so that a rerun waits for the attempt
it resumes to end before it writes (two attempts writing into one output at once could commit
blocks that the other discards).
"""

from __future__ import annotations

import logging
import time

import ray
import ray.data

from mtl.errors import OutputInUseError

logger = logging.getLogger(__name__)


# how long a rerun waits for the attempt it resumes to end: the job of a killed driver ends within
# seconds, one whose node was lost when the cluster gives the node up
EARLIER_ATTEMPT_SECONDS = 120.0


def this_attempt() -> dict:
    """Who is labeling: the Ray job of this driver, with its start time since job ids restart at
    each new cluster."""
    job_id = ray.get_runtime_context().get_job_id()
    return {"job_id": job_id, "started": _cluster_jobs()[job_id]["StartTime"]}


def wait_for_attempt_to_end(attempt: dict | None, seconds: float = EARLIER_ATTEMPT_SECONDS) -> None:
    """Wait until the Ray job of ``attempt`` has ended: two attempts writing into one output at
    once could commit blocks that the other discards. A job this cluster does not know has ended."""
    # an earlier call in this driver has no write tasks left: a failed write stops its own
    if attempt is None or attempt["job_id"] == ray.get_runtime_context().get_job_id() or not _is_running(attempt):
        return
    logger.warning("waiting for Ray job %s, the earlier attempt at this output, to end", attempt["job_id"])
    deadline = time.monotonic() + seconds
    while _is_running(attempt):
        if time.monotonic() > deadline:
            raise OutputInUseError(f"--output: Ray job {attempt['job_id']} is still labeling into it after "
                                   f"{seconds:.0f}s; stop that job (ray job stop, or end its driver) "
                                   "or label into another folder")
        time.sleep(0.5)


def _is_running(attempt: dict) -> bool:
    job = _cluster_jobs().get(attempt["job_id"])
    return job is not None and job["StartTime"] == attempt["started"] and not job["IsDead"]


def _cluster_jobs() -> dict[str, dict]:
    # Private: the cluster's job table as the GCS keeps it. Ray's public job APIs (JobSubmissionClient,
    # ray.util.state) need the dashboard, which a job's local Ray does not start; a Ray release that moves
    # it fails tests/labeling/test_private_ray_apis.py before it fails a label job.
    return {job["JobID"]: job for job in ray._private.state.jobs()}
