"""A real two-node Ray cluster on one machine, and the project's jobs run against it end to end.

    python scripts/multinode_e2e.py [--keep-logs DIR]

Starts an S3-compatible server (moto) and a head node and a second node with `ray start` (two
separate node processes on 127.0.0.1, each with its own CPU budget and temp folder, token
authentication on). The nodes share no folder for outputs: every output goes through the S3 server,
as on a cluster whose nodes have only their own disks. Then:

1. `ray job submit` of training with two workers spread over the nodes, output and checkpoints on
   S3; checks from the job's own report that the ranks ran on different nodes;
2. `ray job submit` of labeling, corpus, model and output on S3; checks the output row count, and
   that a local output is refused on the two nodes;
3. `serve deploy` of serve_config.yaml with the model on S3 and a replica on each node; gets an
   answer from each;
4. training again, killing the second node after the first checkpoint; checks that the job
   still succeeds, restarted on the head node from the checkpoint on S3.

The nodes are stopped whatever happens (their process groups are killed; `ray stop` is not used,
since it would stop every Ray on the machine). Prints how long each step took; exits non-zero
when a step fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from mtl import storage  # noqa: E402  (the repository, wherever the script is started)

BIN = Path(sys.executable).parent
BUCKET = "s3://e2e"
FAST_TRAINING = ["--set", "train.max_examples_per_task=48", "--set", "train.batch_size=8",
                 "--set", "train.num_workers=2", "--set", "train.placement_strategy=SPREAD",
                 "--set", "train.cpus_per_worker=1", "--set", "model.max_length=32"]


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

    def __init__(self, work: Path, object_storage: dict):
        self.work = work
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                    "RAY_ADDRESS": f"http://127.0.0.1:{self.dashboard_port}", "HF_HUB_OFFLINE": "1",
                    "RAY_USAGE_STATS_ENABLED": "0",
                    # one proxy for both nodes (they share 127.0.0.1 and so the port): let it route
                    # to the other node's replica too, instead of preferring its own node's
                    "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0",
                    # each node caches models from S3 in its own folder, as on separate machines
                    **object_storage}
        self.nodes: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        common = ["--block", "--node-ip-address=127.0.0.1", "--object-store-memory=200000000", "--disable-usage-stats"]
        # Ray refuses a second node unless told this is a cluster. Each node gets its own temp dir,
        # as on separate machines: sharing one, the second node's runtime-env agent removes the
        # unpacked working dir that the head's jobs run in.
        cluster = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}
        self._start_node("head", cluster, [
            "--head", f"--port={self.gcs_port}", "--num-cpus=3", f"--temp-dir={self.work / 'ray-head'}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
            *common])
        self._wait(lambda: self.run(["ray", "job", "list"], check=False).returncode == 0, "the head's jobs API")
        # Ray rewrites a joining address of 127.0.0.1 to the machine's routable one; 127.0.0.2 is
        # loopback too and left alone
        self._start_node("worker", cluster, [
            f"--address=127.0.0.2:{self.gcs_port}", "--num-cpus=2", f"--temp-dir={self.work / 'ray-worker'}", *common])
        self._wait(lambda: len(self.alive_nodes()) == 2, "the second node")

    def _start_node(self, name: str, env: dict, arguments: list[str]) -> None:
        # agent ports of their own: Ray's fixed defaults (52365, ...) may be taken by another Ray on
        # the machine, and a head without its job agent answers "No available agent to submit job"
        ports = [f"--{flag}={free_port()}" for flag in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                        "runtime-env-agent-port", "metrics-export-port")]
        log = open(self.work / f"{name}.log", "w")  # noqa: SIM115 (the node process writes it until it ends)
        cache = {"MTL_CACHE_DIR": str(self.work / f"cache-{name}")}
        self.nodes[name] = subprocess.Popen([str(BIN / "ray"), "start", *arguments, *ports],
                                            env={**self.env, **env, **cache}, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def alive_nodes(self) -> list[str]:
        status = self.run(["ray", "status", f"--address=127.0.0.1:{self.gcs_port}"], check=False).stdout
        active = status.split("Active:")[1].split("Pending:")[0] if "Active:" in status else ""
        return re.findall(r"node_([0-9a-f]+)", active)

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
        """`ray job submit --no-wait`; returns the submission id."""
        command = ["ray", "job", "submit", "--no-wait", "--working-dir", ".", "--", *entrypoint]
        deadline = time.time() + 120
        while True:  # a freshly started head answers "No available agent ... try again later" for a while
            done = self.run(command, check=False)
            if done.returncode == 0:
                return re.search(r"raysubmit_\w+", done.stdout).group(0)
            if "try again later" not in done.stdout + done.stderr or time.time() > deadline:
                raise RuntimeError(f"ray job submit failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
            time.sleep(2)

    def wait_for_job(self, job: str, timeout: float = 900) -> str:
        """Wait until the job ends; return its logs, or raise with them when it did not succeed."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            done = self.run(["ray", "job", "status", job], check=False)
            status = (done.stdout + done.stderr).lower()  # e.g. "Job 'raysubmit_...' succeeded"
            for final in ("succeeded", "failed", "stopped"):
                if f"' {final}" in status:
                    logs = self._logs(job)
                    if final != "succeeded":
                        raise RuntimeError(f"job {job} {final}:\n{logs[-4000:]}")
                    return logs
            time.sleep(2)
        logs = self._logs(job)
        raise RuntimeError(f"job {job} did not finish within {timeout}s:\n{logs[-4000:]}")

    def _logs(self, job: str) -> str:
        done = self.run(["ray", "job", "logs", job], check=False)
        return done.stdout + done.stderr

    @staticmethod
    def _wait(condition, what: str, seconds: float = 120) -> None:
        deadline = time.time() + seconds
        while time.time() < deadline:
            if condition():
                return
            time.sleep(1)
        raise RuntimeError(f"{what} did not come up within {seconds}s")


def placements(logs: str) -> list[list[str]]:
    """The per-(re)start worker placement that jobs.train prints: node id by rank."""
    return [re.findall(r"rank \d+ on node (\w+)", line) for line in logs.splitlines() if line.startswith("workers (")]


def train_on_two_nodes(cluster: LocalCluster, output: str) -> str:
    logs = cluster.wait_for_job(cluster.submit(
        ["python", "-m", "jobs.train", "--config", "jobs/configs/demo.yaml", "--set", "train.epochs=1",
         "--set", f"output={output}", *FAST_TRAINING]))
    [first] = placements(logs)
    assert len(first) == 2 and first[0] != first[1], f"workers not on two nodes: {first}"
    assert storage.is_file(f"{output}/best/mtl.json") and storage.list_files(f"{output}/ray/mtl-train")
    return f"ranks on nodes {first[0][:8]} and {first[1][:8]}, model and checkpoints in {output}"


def label_on_the_cluster(cluster: LocalCluster, model: str, output: str) -> str:
    import pyarrow.dataset as pads

    corpus = REPO / "data" / "demo" / "corpus.txt"
    storage.write_bytes(f"{BUCKET}/corpus/corpus.txt", corpus.read_bytes())
    cluster.wait_for_job(cluster.submit(["python", "-m", "jobs.label", "--model", model, "--input",
                                         f"{BUCKET}/corpus/", "--output", output, "--actors", "1,2"]))
    filesystem, path = storage.resolve(output)
    rows = pads.dataset(path, filesystem=filesystem, format="parquet").count_rows()
    lines = len(corpus.read_text().splitlines())
    assert rows == lines, f"{rows} output rows for {lines} input lines"
    try:
        cluster.wait_for_job(cluster.submit(["python", "-m", "jobs.label", "--model", model, "--input",
                                             f"{BUCKET}/corpus/", "--output", str(cluster.work / "local-labels")]))
    except RuntimeError as refused:
        assert "write to shared storage" in str(refused), str(refused)[-2000:]
    else:
        raise AssertionError("a local output on two nodes was not refused")
    return f"{rows} rows in {output}; a local output refused"


def serve_from_each_node(cluster: LocalCluster, model: str, work: Path) -> str:
    import requests
    import yaml

    port = free_port()
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    config["proxy_location"] = "HeadOnly"  # both nodes share 127.0.0.1: one proxy can have the port
    config["http_options"]["port"] = port
    application = config["applications"][0]
    application["args"]["model"] = model
    deployment = application["deployments"][0]
    deployment.pop("autoscaling_config")
    deployment.update(num_replicas=2, max_replicas_per_node=1, ray_actor_options={"num_cpus": 0.5})
    (work / "serve_config.yaml").write_text(yaml.safe_dump(config))
    cluster.run(["serve", "deploy", "--address", cluster.env["RAY_ADDRESS"], str(work / "serve_config.yaml")])
    seen, deadline = set(), time.time() + 180
    while len(seen) < 2 and time.time() < deadline:
        try:
            answer = requests.post(f"http://127.0.0.1:{port}/v1/predict", json={"texts": ["Sam flew to Lima."]},
                                   timeout=10)
            if answer.status_code == 200:
                seen.add(answer.headers["X-Served-By"])
        except requests.RequestException:
            time.sleep(1)
    cluster.run(["serve", "shutdown", "-y", "--address", cluster.env["RAY_ADDRESS"]])
    assert len(seen) == 2, f"answers came from {len(seen)} node(s)"
    cached = [name for name in ("head", "worker") if any((work / f"cache-{name}" / "models").glob("[!.]*"))]
    assert cached == ["head", "worker"], f"the model from S3 was cached on {cached} only"
    return "answers from nodes " + " and ".join(sorted(node[:8] for node in seen)) + ", model fetched once per node"


def survive_losing_a_node(cluster: LocalCluster, output: str) -> str:
    job = cluster.submit(["python", "-m", "jobs.train", "--config", "jobs/configs/demo.yaml", "--set", "train.epochs=4",
                          "--set", "train.max_failures=3", "--set", f"output={output}", *FAST_TRAINING])
    snapshot = f"{output}/ray/mtl-train/checkpoint_manager_snapshot.json"
    deadline = time.time() + 600
    while not storage.is_file(snapshot):
        if time.time() > deadline:
            raise RuntimeError("no checkpoint before the node was to be stopped")
        time.sleep(0.5)
    cluster.kill_node("worker")
    logs = cluster.wait_for_job(job)
    runs = placements(logs)
    assert len(runs) >= 2, f"the workers never restarted: {runs}"
    metrics = json.loads(storage.read_text(f"{output}/metrics.json"))
    assert metrics["resumes"] >= 1 and [entry["epoch"] for entry in metrics["history"]][-1] == 4
    nodes = ", ".join(node[:8] for node in runs[-1])
    return f"restarted {len(runs) - 1}x from the checkpoint on S3, then on nodes {nodes}"


@contextmanager
def timed(name: str, times: dict):
    started = time.perf_counter()
    print(f"== {name} ...", flush=True)
    yield
    times[name] = time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-logs", type=Path, help="copy the node logs here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mtl-multinode-"))
    object_storage = ObjectStorage()
    cluster, times, results = LocalCluster(work, object_storage.env), {}, {}
    try:
        with timed("start S3 and two nodes", times):
            object_storage.start()
            cluster.start()
        with timed("1. train, two workers on two nodes", times):
            results["train"] = train_on_two_nodes(cluster, f"{BUCKET}/train")
        with timed("2. label the demo corpus", times):
            results["label"] = label_on_the_cluster(cluster, f"{BUCKET}/train/best", f"{BUCKET}/labels")
        with timed("3. serve deploy, a replica per node", times):
            results["serve"] = serve_from_each_node(cluster, f"{BUCKET}/train/best", work)
        with timed("4. train, second node stopped mid-run", times):
            results["fault"] = survive_losing_a_node(cluster, f"{BUCKET}/fault")
    except Exception as error:  # report and tear down; the exit code says it failed
        print(f"FAILED: {error}", file=sys.stderr)
        return 1
    finally:
        with timed("tear down", times):
            cluster.stop()
            object_storage.stop()
        if args.keep_logs:
            shutil.copytree(work, args.keep_logs, dirs_exist_ok=True, symlinks=True, ignore=shutil.ignore_patterns(
                "sockets", "runtime_resources", "*.parquet", "*.safetensors", "*.pkl"))
        shutil.rmtree(work, ignore_errors=True)
        for step, seconds in times.items():
            print(f"{step:<42} {seconds:7.1f}s")
    for step, result in results.items():
        print(f"ok {step}: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
