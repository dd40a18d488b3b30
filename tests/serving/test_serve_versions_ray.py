"""Versions on a real `serve run`: an A/B split with sticky clients and per-variant Ray metrics,
and a roll-back that reaches running replicas while requests keep succeeding."""

import concurrent.futures
import os
import re
import shutil
import subprocess
import threading
import time
from collections import Counter

import pytest
import requests
import yaml
from safetensors.torch import load_file, save_file
from test_serve_ray import REPO, SERVE_CLI, free_port, wait_until

from mtl.inference.model_folder import HEADS_FILE, model_version
from mtl.lifecycle import registry

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _other_version(folder, target):
    shutil.copytree(folder, target)
    heads = load_file(str(target / HEADS_FILE))
    heads["sentiment.classifier.bias"] = heads["sentiment.classifier.bias"] + 1.0
    save_file(heads, str(target / HEADS_FILE))
    return target


def _application(name: str, args: dict, replicas: int) -> dict:
    application = yaml.safe_load((REPO / "serve_config.yaml").read_text())["applications"][0]
    application.update(name=name, route_prefix=f"/{name}")
    application["args"].pop("model")
    application["args"].update(args)
    deployment = application["deployments"][0]
    deployment.pop("autoscaling_config")
    deployment.update(num_replicas=replicas, ray_actor_options={"num_cpus": 0.25})
    return application


@pytest.fixture(scope="module")
def versions(tiny_model_dir, tmp_path_factory):
    """Two versions of the tiny model registered as "ab" and as "live", version 1 in production."""
    second = _other_version(tiny_model_dir, tmp_path_factory.mktemp("v2") / "model")
    for name in ("ab", "live"):
        for folder in (tiny_model_dir, second):
            registry.register(name, source=str(folder), run_id=None, model_version=model_version(folder))
        registry.move_alias(name, "1", reason="first")
    return {"1": model_version(tiny_model_dir), "2": model_version(second)}


@pytest.fixture(scope="module")
def served(ray_local, versions, hermetic_serve_config, tmp_path_factory):
    from ray import serve

    port = free_port()
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    config["http_options"].update(host="127.0.0.1", port=port)
    config["applications"] = [
        _application("ab", {"variants": [{"name": "control", "model": "models:/ab@production", "weight": 90},
                                         {"name": "candidate", "model": "models:/ab/2", "weight": 10}]}, 1),
        _application("live", {"model": "models:/live@production", "reload_interval_s": 0.5}, 2)]
    hermetic_serve_config(config)
    path = tmp_path_factory.mktemp("serve-versions") / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [str(SERVE_CLI), "run", "--non-blocking", "--address", ray_local.get_runtime_context().gcs_address,
               str(path)]
    subprocess.run(command, cwd=REPO, check=True, timeout=180, env={**os.environ, "PYTHONPATH": str(REPO)})
    url = f"http://127.0.0.1:{port}"
    for name in ("ab", "live"):
        wait_until(lambda name=name: requests.get(f"{url}/{name}/healthz", timeout=2).status_code == 200, seconds=120)
    yield url
    serve.shutdown()


def _post(url: str, key: str | None = None) -> dict:
    headers = {"X-Client-Key": key} if key else {}
    response = requests.post(url, json={"texts": ["a fine film"]}, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _metrics(ray_local) -> str:
    port = ray_local.nodes()[0]["MetricsExportPort"]
    return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text


def _metric_counts(ray_local) -> Counter:
    """``ray_mtl_requests_total`` of application "ab" per variant, from Ray's Prometheus endpoint."""
    counts = Counter()
    for line in _metrics(ray_local).splitlines():
        if line.startswith("ray_mtl_requests_total{") and 'application="ab"' in line:
            counts[re.search(r'variant="([^"]+)"', line).group(1)] += float(line.rsplit(" ", 1)[1])
    return counts


def test_an_ab_split_follows_the_weights_keeps_clients_and_is_counted_per_variant(served, versions, ray_local):
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _post(f"{served}/ab/v1/predict"), range(400)))
    split = Counter(answer["variant"] for answer in answers)
    assert split["control"] + split["candidate"] == 400
    assert 20 <= split["candidate"] <= 65   # 10% of 400 is 40; the binomial's sd is 6
    assert all(answer["model"] == versions["1" if answer["variant"] == "control" else "2"] for answer in answers)
    sticky = {_post(f"{served}/ab/v1/predict", key="client-42")["variant"] for _ in range(30)}
    assert len(sticky) == 1
    wait_until(lambda: sum(_metric_counts(ray_local).values()) >= 430, seconds=60)
    counted = _metric_counts(ray_local)
    assert counted["candidate"] >= split["candidate"] and counted["control"] >= split["control"]
    assert counted["candidate"] + counted["control"] == 430
    assert re.search(r'^ray_mtl_request_seconds_bucket\{.*application="ab".*variant="candidate"', _metrics(ray_local),
                     re.MULTILINE)


def test_a_rollback_reaches_running_replicas_and_no_request_fails(served, versions):
    answers, failures, stop = [], [], threading.Event()

    def keep_asking():
        while not stop.is_set():
            try:
                answers.append(_post(f"{served}/live/v1/embed")["model"])
            except (AssertionError, requests.RequestException) as error:
                failures.append(str(error))

    workers = [threading.Thread(target=keep_asking) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        def settled_on(version: str) -> bool:
            seen = len(answers)
            time.sleep(1.5)   # both replicas answer in that time
            return seen < len(answers) and set(answers[seen:]) == {version}

        wait_until(lambda: settled_on(versions["1"]), seconds=30)
        registry.move_alias("live", "2", reason="promote under load")
        wait_until(lambda: settled_on(versions["2"]), seconds=60)
        registry.rollback("live", reason="roll back under load")
        wait_until(lambda: settled_on(versions["1"]), seconds=60)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
    assert not failures and len(answers) > 50
    assert set(answers) == {versions["1"], versions["2"]}
