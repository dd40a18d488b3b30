"""A two-node Ray cluster on one machine (two `ray start` processes on loopback, each with its own
CPU budget and temp folder, token authentication on) and moto's S3 server, for the scripts and
benchmarks that need a real cluster whose nodes share no folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BUCKET = "s3://e2e"
NODE_ARGUMENTS = ["--block", "--node-ip-address=127.0.0.1", "--object-store-memory=200000000", "--disable-usage-stats"]
# Ray refuses a second node unless told this is a cluster
CLUSTER = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}
# (set on the head, for every node) Ray keeps about one idle worker process per CPU and ends the
# rest a second after their task: with a job's actors alive, every Ray Data task would then start
# and import a new process, seconds each on a small machine
WARM_WORKER_POOL = {"num_workers_soft_limit": 12}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ObjectStorage:
    """moto's S3 server on loopback, with the bucket BUCKET; its settings go to every Ray node."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "e2e",
                    "AWS_SECRET_ACCESS_KEY": "e2e", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
                    "AWS_EC2_METADATA_DISABLED": "true"}

    def start(self) -> None:
        import logging

        import boto3

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
        self.server.start()
        os.environ.update(self.env)
        boto3.client("s3", endpoint_url=self.env["AWS_ENDPOINT_URL"]).create_bucket(Bucket=BUCKET.removeprefix("s3://"))

    def stop(self) -> None:
        self.server.stop()


class LocalCluster:
    """Two Ray nodes on loopback, each a `ray start --block` process in its own process group."""

    def __init__(self, work: Path, object_storage: dict, head_cpus: int = 3, worker_cpus: int = 2,
                 node_settings: dict | None = None):
        """``node_settings``: more environment for the nodes (Ray's own ``RAY_*`` settings)."""
        self.work, self.head_cpus, self.worker_cpus = work, head_cpus, worker_cpus
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                    "RAY_ADDRESS": f"http://127.0.0.1:{self.dashboard_port}", "HF_HUB_OFFLINE": "1",
                    "RAY_USAGE_STATS_ENABLED": "0",
                    # one proxy for both nodes (they share 127.0.0.1 and so the port): let it route
                    # to the other node's replica too, instead of preferring its own node's
                    "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0",
                    # each node caches models from S3 in its own folder, as on separate machines
                    **object_storage, **(node_settings or {})}
        self.headers = {"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"}
        self.nodes: dict[str, subprocess.Popen] = {}
        self.jobs = self.state = None  # the head's jobs and state API clients, once it is up

    def start(self) -> None:
        # Each node gets its own temp dir, as on separate machines: sharing one, the second node's
        # runtime-env agent removes the unpacked working dir that the head's jobs run in.
        self._start_node("head", [
            "--head", f"--port={self.gcs_port}", f"--num-cpus={self.head_cpus}", f"--temp-dir={self.work / 'ray-head'}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
            f"--system-config={json.dumps(WARM_WORKER_POOL)}", *NODE_ARGUMENTS])
        # the head answers its jobs API a moment before its state API lists it as a node: waiting for
        # both keeps start_worker from taking the head for the node that joined
        self._wait(lambda: (self.jobs or self._connect()) and self.alive_nodes(), "the head")
        self.start_worker()

    def _connect(self) -> bool:
        """Make the jobs client once the head answers. The script talks to the head over HTTP from
        this process: each `ray job status` or `ray status` would start a Python process that imports
        Ray, over two seconds of CPU per poll on a small machine that is also running the jobs."""
        from ray.job_submission import JobSubmissionClient
        from ray.util.state import StateApiClient

        try:
            self.jobs = JobSubmissionClient(self.env["RAY_ADDRESS"], headers=self.headers)
        except ConnectionError:
            return False
        self.state = StateApiClient(self.env["RAY_ADDRESS"], headers=self.headers)
        return True

    def start_worker(self) -> None:
        """Start the second node (again, after ``kill_node("worker")``) and wait until it has joined."""
        before = set(self.alive_nodes())  # a killed node stays listed until its health checks fail
        # Ray rewrites a joining address of 127.0.0.1 to the machine's routable one; 127.0.0.2 is
        # loopback too and left alone
        self._start_node("worker", [
            f"--address=127.0.0.2:{self.gcs_port}", f"--num-cpus={self.worker_cpus}",
            f"--temp-dir={self.work / 'ray-worker'}", *NODE_ARGUMENTS])
        self._wait(lambda: set(self.alive_nodes()) - before, "the second node")

    def _start_node(self, name: str, arguments: list[str]) -> None:
        # agent ports of their own: Ray's fixed defaults (52365, ...) may be taken by another Ray on
        # the machine, and a head without its job agent answers "No available agent to submit job"
        ports = [f"--{flag}={free_port()}" for flag in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                        "runtime-env-agent-port", "metrics-export-port")]
        log = open(self.work / f"{name}.log", "w")  # noqa: SIM115 (the node process writes it until it ends)
        cache = {"MTL_CACHE_DIR": str(self.work / f"cache-{name}")}
        self.nodes[name] = subprocess.Popen([str(BIN / "ray"), "start", *arguments, *ports],
                                            env={**self.env, **CLUSTER, **cache}, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def alive_nodes(self) -> list[str]:
        """The ids of the nodes the head counts as alive (its state API)."""
        from ray.util.state.common import ListApiOptions, StateResource

        alive = self.state.list(StateResource.NODES, ListApiOptions(filters=[("state", "=", "ALIVE")]),
                                raise_on_missing_output=False)
        return [node["node_id"] for node in alive]

    def kill_node(self, name: str) -> None:
        process = self.nodes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop(self) -> None:
        for name in list(self.nodes):
            # already gone, or killed and slow to be reaped: nothing left to stop
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                self.kill_node(name)

    def run(self, command: list[str], check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        done = subprocess.run(command, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:4])}... failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    def submit(self, entrypoint: list[str]) -> str:
        """Submit a job with this repository as its working dir, without waiting; returns its id."""
        deadline = time.time() + 120
        while True:  # a freshly started head answers "No available agent ... try again later" for a while
            try:
                return self.jobs.submit_job(entrypoint=shlex.join(entrypoint), runtime_env={"working_dir": str(REPO)})
            except RuntimeError as refused:
                if "try again later" not in str(refused) or time.time() > deadline:
                    raise
            time.sleep(2)

    def wait_for_job(self, job: str, timeout: float = 900) -> str:
        """Wait until the job ends; return its logs, or raise with them when it did not succeed."""
        from ray.job_submission import JobStatus

        deadline = time.time() + timeout
        while time.time() < deadline:
            status = self.jobs.get_job_status(job)
            if status.is_terminal():
                logs = self.jobs.get_job_logs(job)
                if status != JobStatus.SUCCEEDED:
                    raise RuntimeError(f"job {job} {status.value.lower()}:\n{logs[-4000:]}")
                return logs
            time.sleep(1)
        raise RuntimeError(f"job {job} did not finish within {timeout}s:\n{self.jobs.get_job_logs(job)[-4000:]}")

    @staticmethod
    def _wait(condition, what: str, seconds: float = 120) -> None:
        deadline = time.time() + seconds
        while time.time() < deadline:
            if condition():
                return
            time.sleep(1)
        raise RuntimeError(f"{what} did not come up within {seconds}s")
