"""cluster.yaml against the Ray autoscaler's own schema; the KubeRay manifests against KubeRay's own CRD
schemas, serve_config.yaml and the rules of a cluster whose pods share no disk."""

import copy
import shlex

import jsonschema
import pytest
import yaml
from conftest import REPO
from ray.autoscaler._private.util import prepare_config, validate_config

from mtl.runtime.cluster import NODE_ENVIRONMENT
from mtl.serving.haproxy import HIGH_THROUGHPUT_ENVIRONMENT


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
        expected = [f"{name}={value}" for name, value in {**HIGH_THROUGHPUT_ENVIRONMENT, **NODE_ENVIRONMENT}.items()]
        assert shlex.split(ray_start.split(";")[-1]) == [*expected, "RAY_AUTH_MODE=token"]


def pod_environments(cluster: dict) -> list[dict]:
    """The environment each group of ``cluster`` (a RayCluster spec) starts its Ray container with."""
    return [{entry["name"]: entry["value"] for entry in group["template"]["spec"]["containers"][0]["env"]}
            for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]]


def test_rayservice_runs_serve_in_high_throughput_mode_on_every_pod_with_the_nodes_settings():
    for environment in pod_environments(load("k8s/rayservice.yaml")["spec"]["rayClusterConfig"]):
        assert environment == {**HIGH_THROUGHPUT_ENVIRONMENT, **NODE_ENVIRONMENT}


def test_serve_config_passes_serves_schema_and_gives_its_controller_the_high_throughput_mode():
    from ray.serve.schema import ServeDeploySchema

    config = load("serve_config.yaml")
    ServeDeploySchema.model_validate(config)  # what `serve run` and `serve deploy` read it with
    assert config["controller_options"]["runtime_env"]["env_vars"] == HIGH_THROUGHPUT_ENVIRONMENT


def test_rayjob_starts_every_pod_with_the_nodes_settings():
    for environment in pod_environments(load("k8s/rayjob-train.yaml")["spec"]["rayClusterSpec"]):
        assert environment == NODE_ENVIRONMENT


def crd_schema(kind: str) -> dict:
    """The openAPIV3Schema of KubeRay's own CRD for ``kind`` (vendored in k8s/crds)."""
    crd = load(f"k8s/crds/ray.io_{kind.lower()}s.yaml")
    [version] = [entry for entry in crd["spec"]["versions"] if entry["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def schema_problems(document: dict, schema: dict) -> list[str]:
    """What the API server would reject: schema violations, and (as ``--validate=strict``) fields
    the schema does not know."""
    problems = [f"{'.'.join(map(str, error.absolute_path))}: {error.message}"
                for error in jsonschema.Draft7Validator(schema).iter_errors(document)]
    return problems + unknown_fields(document, schema, "")


def unknown_fields(value, schema: dict, where: str) -> list[str]:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, dict) and "properties" in schema:
        return [problem for key, item in value.items()
                for problem in (unknown_fields(item, schema["properties"][key], f"{where}.{key}")
                                if key in schema["properties"] else [f"{where}.{key}: unknown field"])]
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        return [problem for key, item in value.items()
                for problem in unknown_fields(item, schema["additionalProperties"], f"{where}.{key}")]
    if isinstance(value, list) and "items" in schema:
        return [problem for index, item in enumerate(value)
                for problem in unknown_fields(item, schema["items"], f"{where}[{index}]")]
    return []


@pytest.mark.parametrize("name", ["k8s/rayjob-train.yaml", "k8s/rayservice.yaml"])
def test_manifests_pass_kuberays_own_crd_schemas(name):
    manifest = load(name)
    assert manifest["apiVersion"] == "ray.io/v1"
    assert schema_problems(manifest, crd_schema(manifest["kind"])) == []


def test_the_crd_check_catches_a_misspelt_field_and_a_wrong_type():
    broken = load("k8s/rayjob-train.yaml")
    broken["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParam"] = {}
    broken["spec"]["backoffLimit"] = "one"
    problems = schema_problems(broken, crd_schema("RayJob"))
    assert any("rayStartParam: unknown field" in problem for problem in problems)
    assert any(problem.startswith("spec.backoffLimit:") for problem in problems)


def cluster_of(manifest: dict) -> dict:
    return manifest["spec"].get("rayClusterSpec") or manifest["spec"]["rayClusterConfig"]


@pytest.mark.parametrize("name", ["k8s/rayjob-train.yaml", "k8s/rayservice.yaml"])
def test_kuberay_reaches_the_dashboard_which_stays_inside_the_cluster_behind_tokens(name):
    cluster = cluster_of(load(name))
    assert cluster["authOptions"] == {"mode": "token"}
    # the operator and the job submitter call the dashboard through the head Service: not loopback
    assert cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert cluster["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
    for path in (REPO / "k8s").glob("*.yaml"):
        assert all(document.get("kind") != "Service" for document in yaml.safe_load_all(path.read_text())), \
            f"{path.name}: a Service of our own could expose the dashboard"


def test_the_service_serves_the_model_that_the_job_exports_from_object_storage():
    job, service = load("k8s/rayjob-train.yaml"), load("k8s/rayservice.yaml")
    output = shlex.split(job["spec"]["entrypoint"])[-1].removeprefix("output=")
    [application] = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    assert output.startswith("s3://") and application["args"]["model"] == f"{output}/best"
    for manifest in (job, service):
        cluster = cluster_of(manifest)
        for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
            container = group["template"]["spec"]["containers"][0]
            assert "volumes" not in group["template"]["spec"], "pods share no disk: outputs go to object storage"
            assert container["envFrom"] == [{"secretRef": {"name": "mtl-object-storage"}}]


def gpus_per_pod(group: dict) -> int:
    return int(group["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0))


def test_gpu_workers_and_the_work_that_needs_them_agree():
    job, service = load("k8s/rayjob-train.yaml"), load("k8s/rayservice.yaml")
    config = load(shlex.split(job["spec"]["entrypoint"])[4])
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    job_gpus = sum(gpus_per_pod(group) * group["maxReplicas"] for group in workers)
    assert config["train"]["use_gpu"] is True and config["train"]["num_workers"] == job_gpus
    assert gpus_per_pod(job["spec"]["rayClusterSpec"]["headGroupSpec"]) == 0
    [application] = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    [endpoint] = application["deployments"]
    wanted = endpoint["ray_actor_options"].get("num_gpus", 0) * endpoint["autoscaling_config"]["max_replicas"]
    groups = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert wanted > 0 and wanted <= sum(gpus_per_pod(group) * group["maxReplicas"] for group in groups)
    cpus_per_pod = min(int(group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
                       for group in groups)
    assert endpoint["ray_actor_options"]["num_cpus"] <= cpus_per_pod


def test_rayservice_serves_the_same_applications_as_serve_config():
    service = load("k8s/rayservice.yaml")
    assert service["kind"] == "RayService"
    in_cluster = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    local = load("serve_config.yaml")["applications"]
    for applications in (in_cluster, local):
        applications[0]["args"].pop("model")
        for deployment in applications[0]["deployments"]:  # sized for the cluster's pods, checked above
            deployment.pop("ray_actor_options")
            for bound in ("min_replicas", "max_replicas"):
                deployment["autoscaling_config"].pop(bound)
    assert in_cluster == local


def test_rayjob_runs_the_training_job_with_its_outputs_on_object_storage():
    job = load("k8s/rayjob-train.yaml")
    assert job["kind"] == "RayJob"
    assert job["spec"]["entrypoint"].startswith("python -m jobs.train --config jobs/configs/")
    config = REPO / job["spec"]["entrypoint"].split("--config ")[1].split()[0]
    assert config.exists()
    data = [task[split]["path"] for task in yaml.safe_load(config.read_text())["tasks"] for split in ("train", "eval")]
    assert all(path.startswith("s3://") for path in data), "pods have no copy of ../shared/data"
