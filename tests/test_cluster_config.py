"""cluster.yaml against the Ray autoscaler's own schema, and the KubeRay manifests against serve_config.yaml."""

import copy
import shlex

import pytest
import yaml
from conftest import REPO
from ray.autoscaler._private.util import prepare_config, validate_config

from mtl.serve import HIGH_THROUGHPUT_ENVIRONMENT


def load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


def test_cluster_yaml_passes_the_autoscalers_schema_and_defaults():
    validate_config(prepare_config(load("cluster.yaml")))


def test_the_schema_check_catches_a_broken_cluster_yaml():
    broken = copy.deepcopy(load("cluster.yaml"))
    broken["available_node_types"]["gpu_worker"]["resources"]["GPU"] = "one"
    with pytest.raises(Exception, match="one"):
        validate_config(prepare_config(broken))


def test_cluster_has_a_cpu_head_and_autoscaling_gpu_workers_with_a_private_dashboard_and_tokens():
    config = load("cluster.yaml")
    head, worker = config["available_node_types"]["head"], config["available_node_types"]["gpu_worker"]
    assert head["resources"]["GPU"] == 0 and worker["resources"]["GPU"] >= 1
    assert worker["min_workers"] == 0 and worker["max_workers"] >= 1
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "RAY_AUTH_MODE=token ray start --head" in head_start
    assert "RAY_AUTH_MODE=token ray start --address" in " ".join(config["worker_start_ray_commands"])
    assert any("pip install" in command for command in config["setup_commands"])
    for start in (head_start, " ".join(config["worker_start_ray_commands"])):
        ray_start = start[:start.index(" ray start")]  # the variables set for `ray start` on each node
        assert shlex.split(ray_start.split(";")[-1]) == [f"{name}={value}" for name, value in HIGH_THROUGHPUT_ENVIRONMENT.items()] + ["RAY_AUTH_MODE=token"]


def test_rayservice_runs_serve_in_high_throughput_mode_on_every_pod():
    cluster = load("k8s/rayservice.yaml")["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        environment = {entry["name"]: entry["value"] for entry in group["template"]["spec"]["containers"][0]["env"]}
        assert environment == HIGH_THROUGHPUT_ENVIRONMENT


def test_rayservice_serves_the_same_applications_as_serve_config():
    service = load("k8s/rayservice.yaml")
    assert service["kind"] == "RayService" and service["spec"]["rayClusterConfig"]["authOptions"] == {"mode": "token"}
    in_cluster = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    local = load("serve_config.yaml")["applications"]
    assert in_cluster[0]["args"].pop("model") == "/models/demo/best"
    local[0]["args"].pop("model")
    assert in_cluster == local


def test_rayjob_runs_the_training_job_with_shared_storage():
    job = load("k8s/rayjob-train.yaml")
    assert job["kind"] == "RayJob" and job["spec"]["entrypoint"].startswith("python -m jobs.train --config jobs/configs/")
    assert "train.storage_path=/models/" in job["spec"]["entrypoint"]
    assert (REPO / job["spec"]["entrypoint"].split("--config ")[1].split()[0]).exists()
