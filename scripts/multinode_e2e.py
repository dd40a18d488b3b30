"""A real two-node Ray cluster on one machine, and the project's jobs run against it end to end.

    python scripts/multinode_e2e.py [--encoder DIR] [--keep-logs DIR]

Starts an S3-compatible server (moto) and a head node and a second node with `ray start` (two
separate node processes on 127.0.0.1, each with its own CPU budget and temp folder, token
authentication on). The nodes share no folder for outputs: every output goes through the S3 server,
as on a cluster whose nodes have only their own disks. Then:

1. `ray job submit` of training with two workers spread over the nodes, output and checkpoints on
   S3 (and the pretrained encoder too with `--encoder`: a local encoder folder the script uploads,
   which each node then fetches; the tests pass a tiny one); checks from the job's own report that
   the ranks started on different nodes, then kills the second node after the first checkpoint and
   checks that the job still succeeds, restarted on the head node from the checkpoint on S3, with
   the model and checkpoints in the bucket;
2. the second node joins again, as a replaced machine would;
3. `ray job submit` of labeling with that model, corpus and output on S3; checks the output row
   count, and that a local output is refused on the two nodes;
4. `serve deploy` of serve_config.yaml with the model on S3 and a replica on each node; gets an
   answer from each. HAProxy keeps its files in a temporary folder, removed at the end.

The nodes are stopped whatever happens (their process groups are killed; `ray stop` is not used,
since it would stop every Ray on the machine). Prints how long each step took; exits non-zero
when a step fails.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from local_cluster import BUCKET, LocalCluster, ObjectStorage, free_port  # noqa: E402  (beside this script)

from mtl import storage  # noqa: E402  (the repository, wherever the script is started)

# what is checked here is the cluster's behaviour: embedding preservation (tested on its own) is off,
# since it costs each worker a second encoder to load and a forward pass per row
FAST_TRAINING = ["--set", "train.max_examples_per_task=48", "--set", "train.batch_size=8",
                 "--set", "train.num_workers=2", "--set", "train.placement_strategy=SPREAD",
                 "--set", "train.cpus_per_worker=1", "--set", "model.max_length=32",
                 "--set", "train.preserve_embedding=null", "--set", "train.patience=null"]
# the node is stopped once the first epoch's checkpoint is on S3: the epochs after it (a second or two
# each on the tiny encoder, with their checkpoints) must outlast noticing the checkpoint and stopping
# the node, which takes under a second
EPOCHS = 6
# the head notices a stopped node after 2 missed health checks a second apart, not Ray's default of 5
# three seconds apart: the job's restart is what is checked, not how long Ray waits before it
NODE_DEATH_NOTICED_FAST = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "2"}


def placements(logs: str) -> list[list[str]]:
    """The per-(re)start worker placement that jobs.train prints: node id by rank."""
    return [re.findall(r"rank \d+ on node (\w+)", line) for line in logs.splitlines() if line.startswith("workers (")]


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


def serve_from_each_node(cluster: LocalCluster, model: str, work: Path, haproxy: Path) -> str:
    import requests
    import yaml

    from mtl.serving.haproxy import haproxy_file_locations

    port = free_port()
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    # HAProxy's files go to a folder this script removes, not /tmp/haproxy-serve; a stopping replica
    # drains for 2 s, not high-throughput mode's 30 s, which `serve shutdown` would wait out
    config["controller_options"]["runtime_env"]["env_vars"].update(
        haproxy_file_locations(str(haproxy)), RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S="2")
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


def train_losing_a_node(cluster: LocalCluster, output: str, encoder: Path | None) -> str:
    settings = ["--set", f"train.epochs={EPOCHS}", "--set", "train.max_failures=3", "--set", f"output={output}",
                *FAST_TRAINING]
    if encoder:
        storage.upload_folder(encoder, f"{BUCKET}/encoder")
        settings += ["--set", f"model.encoder={BUCKET}/encoder"]
    job = cluster.submit(["python", "-m", "jobs.train", "--config", "jobs/configs/demo.yaml", *settings])
    snapshot = f"{output}/ray/mtl-train/checkpoint_manager_snapshot.json"
    deadline = time.time() + 600
    while not storage.is_file(snapshot):
        if time.time() > deadline:
            raise RuntimeError("no checkpoint before the node was to be stopped")
        time.sleep(0.5)
    cluster.kill_node("worker")
    logs = cluster.wait_for_job(job)
    runs = placements(logs)
    assert len(runs[0]) == 2 and runs[0][0] != runs[0][1], f"workers did not start on two nodes: {runs[0]}"
    assert len(runs) >= 2, f"the workers never restarted: {runs}"
    metrics = json.loads(storage.read_text(f"{output}/metrics.json"))
    epochs = [entry["epoch"] for entry in metrics["history"]]
    assert metrics["resumes"] >= 1 and epochs[-1] == EPOCHS, f"{metrics['resumes']} resumes, epochs {epochs}"
    assert storage.is_file(f"{output}/best/mtl.json") and storage.list_files(f"{output}/ray/mtl-train")
    nodes = ", ".join(node[:8] for node in runs[-1])
    return (f"ranks on nodes {runs[0][0][:8]} and {runs[0][1][:8]}, restarted {len(runs) - 1}x from the checkpoint "
            f"on S3, then on nodes {nodes}; model and checkpoints in {output}")


@contextmanager
def timed(name: str, times: dict):
    started = time.perf_counter()
    print(f"== {name} ...", flush=True)
    yield
    times[name] = time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", type=Path, help="train from this local encoder folder, uploaded to S3 first")
    parser.add_argument("--keep-logs", type=Path, help="copy the node logs here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mtl-multinode-"))
    haproxy = Path(tempfile.mkdtemp(prefix="haproxy-"))  # short: HAProxy refuses long socket paths
    object_storage = ObjectStorage()
    cluster, times, results = LocalCluster(work, object_storage.env, node_settings=NODE_DEATH_NOTICED_FAST), {}, {}
    try:
        with timed("start S3 and two nodes", times):
            object_storage.start()
            cluster.start()
        with timed("1. train, second node stopped mid-run", times):
            results["train"] = train_losing_a_node(cluster, f"{BUCKET}/train", args.encoder)
        with timed("2. the second node joins again", times):
            cluster.start_worker()
        with timed("3. label the demo corpus", times):
            results["label"] = label_on_the_cluster(cluster, f"{BUCKET}/train/best", f"{BUCKET}/labels")
        with timed("4. serve deploy, a replica per node", times):
            results["serve"] = serve_from_each_node(cluster, f"{BUCKET}/train/best", work, haproxy)
    except Exception as error:  # report and tear down; the exit code says it failed
        print(f"FAILED: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    finally:
        with timed("tear down", times):
            cluster.stop()
            object_storage.stop()
        if args.keep_logs:
            shutil.copytree(work, args.keep_logs, dirs_exist_ok=True, symlinks=True, ignore=shutil.ignore_patterns(
                "sockets", "runtime_resources", "*.parquet", "*.safetensors", "*.pkl"))
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(haproxy, ignore_errors=True)
        for step, seconds in times.items():
            print(f"{step:<42} {seconds:7.1f}s")
    for step, result in results.items():
        print(f"ok {step}: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
