"""The endpoint on Ray Serve, deployed from serve_config.yaml with the real `serve run` command.

The config is the repository's own, rewritten only where a test must: the tiny model, a free
loopback port, small CPU requests, two fixed model replicas (for the replica-kill test), and a
second application with tiny queues (for the overload test).
"""

import asyncio
import concurrent.futures
import copy
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml

REPO = Path(__file__).resolve().parents[2]
SERVE_CLI = Path(sys.executable).parent / "serve"

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TEXTS = ["Alice flew to Paris.", "a fine film", "Bob works at Hooli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def endpoint_config(tight_model: str, port: int, main_model: str) -> dict:
    """Two applications: "mtl" with the model in a deployment of its own (two replicas, for the
    kill test) read from ``main_model`` (on S3), and "tight", colocated, with queues of one (for the
    overload test), serving ``tight_model`` (a registered version)."""
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    config["http_options"].update(host="127.0.0.1", port=port)
    tight = config["applications"][0]
    tight.update(name="tight", route_prefix="/tight")
    tight["args"].update(model=tight_model, max_texts=8, max_batch_texts=32, batch_wait_timeout_s=1.0)
    tight["deployments"][0].update(num_replicas=1, max_ongoing_requests=1, max_queued_requests=1,
                                   ray_actor_options={"num_cpus": 0.25})
    tight["deployments"][0].pop("autoscaling_config")
    main = copy.deepcopy(tight)
    main.update(name="mtl", route_prefix="/")
    main["args"].update(model=main_model, model_deployment=True, batch_wait_timeout_s=0.05,
                        drift={"window": 50, "min_window": 10})
    main["deployments"] = [
        {"name": "Endpoint", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}},
        {"name": "ModelReplica", "num_replicas": 2, "max_ongoing_requests": 64, "ray_actor_options": {"num_cpus": 0.5}},
    ]
    config["applications"] = [main, tight]
    return config


@pytest.fixture(scope="module")
def s3_model(tiny_model_dir, s3_server, tmp_path_factory) -> str:
    """The tiny model folder, with reference statistics for drift, uploaded to the session's S3
    server, as a cluster would serve it."""
    import boto3

    from mtl import storage
    from mtl.inference.reference import store_reference

    folder = tmp_path_factory.mktemp("watched") / "model"
    shutil.copytree(tiny_model_dir, folder)
    store_reference(folder, TEXTS * 10)
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="serving")
    storage.upload_folder(folder, "s3://serving/model", last="mtl.json")
    return "s3://serving/model"


@pytest.fixture(scope="module")
def registered_model(tiny_model_dir) -> str:
    """The tiny model registered in the session's MLflow store and promoted to production."""
    from mtl.inference.model_folder import model_version
    from mtl.lifecycle import registry

    version = registry.register("served", source=str(tiny_model_dir), run_id=None,
                                model_version=model_version(tiny_model_dir)).version
    registry.move_alias("served", version, reason="serving test")
    return "models:/served@production"


@pytest.fixture(scope="module")
def endpoint(ray_local, registered_model, s3_model, hermetic_serve_config, tmp_path_factory,
             handle_loop):
    from ray import serve

    port = free_port()
    config = hermetic_serve_config(endpoint_config(registered_model, port, s3_model))
    config_path = tmp_path_factory.mktemp("serve") / "serve_config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    address = ray_local.get_runtime_context().gcs_address
    command = [str(SERVE_CLI), "run", "--non-blocking", "--address", address, str(config_path)]
    subprocess.run(command, cwd=REPO, check=True, timeout=180, env={**os.environ, "PYTHONPATH": str(REPO)})
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(f"{url}/healthz", timeout=2).status_code == 200, seconds=120)
    wait_until(lambda: requests.get(f"{url}/tight/healthz", timeout=2).status_code == 200, seconds=60)
    yield url
    serve.shutdown()


def wait_until(condition, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if condition():
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise AssertionError(f"not ready within {seconds}s")


@pytest.fixture(scope="module")
def handle_loop():
    """An event loop running for the whole module, for the deployment handles the tests make: in
    Serve's high-throughput mode (RAY_SERVE_THROUGHPUT_OPTIMIZED=1) a handle's router lives on the
    loop it was first used on, and learns of replaced replicas only while that loop runs. The
    endpoint depends on it, so that the loop outlives serve.shutdown, which closes the handles."""
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    runner.join(timeout=10)
    loop.close()


@pytest.fixture(scope="module")
def replica_stats(endpoint, handle_loop):
    """A function giving the stats of each live model replica, by process id (the handle spreads
    calls over replicas)."""
    from ray import serve

    async def ask() -> list[dict]:
        handle = serve.get_deployment_handle("ModelReplica", app_name="mtl")
        return [await handle.stats.remote() for _ in range(40)]

    def stats() -> dict[int, dict]:
        answers = asyncio.run_coroutine_threadsafe(ask(), handle_loop).result(timeout=60)
        return {entry["pid"]: entry for entry in answers}

    return stats


def test_every_route_answers_through_serve(endpoint, ray_local):
    answer = requests.post(f"{endpoint}/v1/embed", json={"texts": TEXTS}, timeout=30)
    assert answer.headers["X-Served-By"] == ray_local.get_runtime_context().get_node_id()
    embedded = answer.json()
    assert len(embedded["embeddings"]) == 3 and embedded["dimension"] == 32
    predicted = requests.post(f"{endpoint}/v1/predict", json={"texts": TEXTS, "tasks": ["sentiment"]}, timeout=30)
    assert predicted.status_code == 200
    assert [set(result["labels"]) for result in predicted.json()["results"]] == [{"sentiment"}] * 3
    assert requests.get(f"{endpoint}/v1/model", timeout=10).json()["tasks"][1]["name"] == "ner"
    assert requests.get(f"{endpoint}/docs", timeout=10).status_code == 200
    bad = requests.post(f"{endpoint}/v1/predict", json={"texts": ["a"] * 9}, timeout=10)
    assert bad.status_code == 422 and bad.json()["error"].startswith("texts:")


def test_the_shipped_config_puts_haproxy_on_the_port_without_any_variable_exported(
        endpoint, hermetic_serve_config):
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in os.environ  # only serve_config.yaml turns it on
    [haproxy_config] = hermetic_serve_config.haproxy_folder.glob("*/haproxy.cfg")  # one node
    assert f"bind 127.0.0.1:{endpoint.rsplit(':', 1)[1]}" in haproxy_config.read_text()
    assert requests.post(f"{endpoint}/v1/embed", json={"texts": TEXTS}, timeout=30).status_code == 200


def test_the_demo_page_inspection_and_drift_run_through_serve_and_every_metric_reaches_prometheus(
        endpoint, ray_local):
    assert requests.get(f"{endpoint}/", timeout=10).text.startswith("<!doctype html>")
    # through the model replicas' handle
    inspected = requests.post(f"{endpoint}/v1/inspect", json={"text": "Alice flew to Paris", "head": 1}, timeout=30)
    assert inspected.status_code == 200, inspected.text
    assert inspected.json()["layers"] == 2 and len(inspected.json()["attention"]) == len(inspected.json()["tokens"])
    truncated = "a very long sentence that the tiny model with its sixteen tokens must cut short " * 2
    for _ in range(4):
        assert requests.post(f"{endpoint}/v1/predict", json={"texts": [*TEXTS, truncated]}, timeout=30).ok
    drift = requests.get(f"{endpoint}/v1/drift", timeout=10).json()["variants"][0]
    assert drift["reference"] and drift["window"] >= 16
    assert set(drift["scores"]) == {"length", "embedding", "labels/sentiment", "labels/ner"}
    # every metric the shipped Grafana dashboard and alerting rules read is exported by Ray
    monitoring = REPO / "monitoring"
    wanted = set(re.findall(r"ray_mtl_\w+", (monitoring / "grafana_dashboard.json").read_text()
                            + (monitoring / "alerts.yml").read_text()))
    assert len(wanted) == 9
    port = ray_local.nodes()[0]["MetricsExportPort"]

    def exported() -> set[str]:
        scrape = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        return {line.split("{")[0] for line in scrape.splitlines() if line.startswith("ray_mtl_")}

    wait_until(lambda: wanted <= exported(), seconds=60)


def test_the_model_on_s3_is_served_from_one_cached_copy_per_node(endpoint, tiny_model_dir, model_cache):
    from mtl.inference.model_folder import model_version

    served = requests.get(f"{endpoint}/v1/model", timeout=10).json()
    assert served["version"] == model_version(tiny_model_dir)
    # the "tight" application serves models:/served@production: the same folder, from the registry
    assert requests.get(f"{endpoint}/tight/v1/model", timeout=10).json()["version"] == served["version"]
    local = requests.post(f"{endpoint}/tight/v1/embed", json={"texts": TEXTS}, timeout=30).json()["embeddings"]
    remote = requests.post(f"{endpoint}/v1/embed", json={"texts": TEXTS}, timeout=30).json()["embeddings"]
    assert np.allclose(remote, local, atol=1e-5)
    copies = [folder for folder in (model_cache / "models").iterdir() if not folder.name.startswith(".")]
    assert len(copies) == 1 and (copies[0] / "heads.safetensors").is_file()


def test_concurrent_requests_share_model_batches(endpoint, replica_stats):
    before = sum(stats["batches"] for stats in replica_stats().values())
    requests_before = sum(stats["requests"] for stats in replica_stats().values())
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda i: requests.post(f"{endpoint}/v1/predict", json={"texts": [f"text {i}"]},
                                                        timeout=60), range(64)))
    assert all(answer.status_code == 200 for answer in answers)
    stats = replica_stats().values()
    batches = sum(entry["batches"] for entry in stats) - before
    assert sum(entry["requests"] for entry in stats) - requests_before == 64
    assert batches < 64 / 2, f"64 concurrent requests ran in {batches} batches"


def test_an_overloaded_endpoint_answers_503_at_once_and_never_500(endpoint):
    def ask(index: int) -> tuple[int, float]:
        started = time.perf_counter()
        answer = requests.post(f"{endpoint}/tight/v1/embed", json={"texts": [f"load {index}"]}, timeout=60)
        if answer.status_code == 503:
            assert answer.headers["Retry-After"] == "1"
        return answer.status_code, time.perf_counter() - started

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(ask, range(12)))
    codes = [code for code, _ in outcomes]
    assert set(codes) <= {200, 503} and codes.count(200) >= 1 and codes.count(503) >= 6, codes
    assert max(seconds for code, seconds in outcomes if code == 503) < 1.0  # rejected, not queued behind the batch


def test_killing_a_model_replica_under_load_loses_no_request(endpoint, replica_stats):
    """With model_deployment, the HTTP replica retries on the other model replica while Serve
    replaces the killed one: every request is answered 200, and no connection drops."""
    wait_until(lambda: len(replica_stats()) == 2, seconds=60)
    victim = next(iter(replica_stats()))
    outcomes, stop = [], threading.Event()

    def load() -> None:
        with requests.Session() as session:  # keep-alive, as real clients are
            while not stop.is_set():
                try:
                    answer = session.post(f"{endpoint}/v1/predict", json={"texts": TEXTS}, timeout=60)
                    outcomes.append(answer.status_code)
                except requests.RequestException as error:
                    outcomes.append(type(error).__name__)

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(1)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in replica_stats() and len(replica_stats()) == 2, seconds=90)
        time.sleep(1)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
    assert len(outcomes) > 20 and set(outcomes) == {200}, f"{len(outcomes)} requests, outcomes {set(outcomes)}"
