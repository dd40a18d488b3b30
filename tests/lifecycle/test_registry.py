"""Model versions in MLflow's registry (its embedded SQLite store), promotion by comparison, and
training that continues from a model folder."""

import json
import shutil

import pytest
import torch
from conftest import DEMO
from safetensors.torch import load_file, save_file
from train_configs import demo_config

from jobs import registry as registry_job
from mtl.config import ModelConfig, validate_config
from mtl.errors import DataError, ModelFolderError
from mtl.inference.model_folder import HEADS_FILE, model_version
from mtl.inference.predictor import Predictor
from mtl.lifecycle import registry
from mtl.lifecycle.promotion import promote_if_better
from mtl.tasks import TaskSpec
from mtl.train.continuation import inherited_specs, initial_bundle


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def _version(name: str, folder) -> str:
    return str(registry.register(name, source=str(folder), run_id=None, model_version=model_version(folder)).version)


def _copy(folder, target):
    shutil.copytree(folder, target)
    return target


def test_promote_and_roll_back_move_the_alias_and_record_why(store, tiny_model_dir, tmp_path):
    first = _version("m", tiny_model_dir)
    second = _version("m", _copy(tiny_model_dir, tmp_path / "v2"))
    registry.move_alias("m", first, reason="the first")
    registry.move_alias("m", second, reason="better on June data")
    assert registry.resolve_model("models:/m@production") == str(tmp_path / "v2")
    assert registry.resolve_model("models:/m/1") == str(tiny_model_dir)
    entry = registry.rollback("m", reason="complaints")
    assert (entry["previous"], entry["version"], entry["action"]) == (second, first, "rollback")
    assert registry.current_version("m") == first
    with pytest.raises(ValueError, match="no version held it before"):
        registry.rollback("m", reason="again")
    history = registry.alias_history("m")
    assert [(e["action"], e["version"], e["reason"]) for e in history] == [
        ("promote", "1", "the first"), ("promote", "2", "better on June data"), ("rollback", "1", "complaints")]
    versions = registry.list_versions("m")
    assert [(v["version"], v["aliases"], v["reason"]) for v in versions] == [
        ("2", [], "better on June data"), ("1", ["production"], "complaints")]
    assert versions[1]["model"] == model_version(tiny_model_dir)


def test_an_unknown_version_or_alias_is_named(store, tiny_model_dir):
    _version("m", tiny_model_dir)
    with pytest.raises(ModelFolderError, match="models:/m@staging"):
        registry.resolve_model("models:/m@staging")
    with pytest.raises(ModelFolderError, match="models:/other/1"):
        registry.resolve_model("models:/other/1")


def test_the_registry_command_lists_promotes_and_rolls_back(store, tiny_model_dir, tmp_path, capsys):
    _version("m", tiny_model_dir)
    _version("m", _copy(tiny_model_dir, tmp_path / "v2"))
    assert registry_job.main(["promote", "--name", "m", "--version", "1", "--reason", "first"]) == 0
    assert registry_job.main(["promote", "--name", "m", "--version", "2", "--reason", "second"]) == 0
    assert registry_job.main(["rollback", "--name", "m", "--reason", "bad ORG entities"]) == 0
    assert registry_job.main(["list", "--name", "m", "--tracking-uri", store]) == 0
    printed = capsys.readouterr().out
    assert "m@production: version 2 -> 1 (bad ORG entities)" in printed
    assert "rollback production: 2 -> 1 (bad ORG entities)" in printed
    assert registry_job.main(["promote", "--name", "m", "--version", "9", "--reason", "x"]) == 2
    assert "9" in capsys.readouterr().err


def _self_labeled_eval(predictor: Predictor, path):
    """The demo eval sentences labeled by ``predictor`` itself: on them it scores 1.0 on every task."""
    rows = [json.loads(line) for line in (DEMO / "eval.jsonl").read_text().splitlines()]
    answers = predictor.predict(words=[row["tokens"] for row in rows], tasks=["ner"])
    labels = predictor.predict([row["text"] for row in rows], tasks=["sentiment"])
    with path.open("w") as handle:
        for row, tagged, labeled in zip(rows, answers, labels):
            tags = ["O"] * len(row["tokens"])
            for entity in tagged.entities["ner"]:
                inside = entity.end - entity.start - 1
                tags[entity.start:entity.end] = [f"B-{entity.label}"] + [f"I-{entity.label}"] * inside
            handle.write(json.dumps({**row, "tags": tags, "sentiment": labeled.labels["sentiment"].label}) + "\n")
    return path


def _flip_sentiment(folder):
    """A model whose sentiment head answers the other label wherever the original answered one."""
    heads = load_file(str(folder / HEADS_FILE))
    for name in ("sentiment.classifier.weight", "sentiment.classifier.bias"):
        heads[name] = torch.flip(heads[name], dims=[0]).contiguous()
    save_file(heads, str(folder / HEADS_FILE))
    return folder


def test_promote_if_better_refuses_a_worse_version_and_takes_a_tie(store, tiny_model_dir, tmp_path, tiny_encoder_dir):
    data = _self_labeled_eval(Predictor.from_folder(tiny_model_dir), tmp_path / "eval.jsonl")
    raw = demo_config(str(tiny_encoder_dir), str(tmp_path / "unused"))
    for task in raw["tasks"]:
        task["eval"]["path"] = str(data)
    config = validate_config(raw)
    first = _version("m", tiny_model_dir)
    assert promote_if_better("m", first, config, resamples=100).promoted   # the first is unopposed
    worse = _version("m", _flip_sentiment(_copy(tiny_model_dir, tmp_path / "flipped")))
    decision = promote_if_better("m", worse, config, resamples=200)
    assert not decision.promoted and registry.current_version("m") == first
    assert decision.comparison["sentiment"]["worse"] and decision.comparison["sentiment"]["candidate"] == 0.0
    assert decision.comparison["ner"] == {"candidate": 1.0, "production": 1.0, "difference": 0.0,
                                          "difference_ci": [0.0, 0.0], "worse": False}
    same = _version("m", _copy(tiny_model_dir, tmp_path / "same"))
    assert promote_if_better("m", same, config, resamples=100).promoted
    assert registry.current_version("m") == same


def test_continuing_starts_from_the_models_encoder_and_shared_heads(tiny_model_dir, demo_specs):
    topic = TaskSpec("topic", "classification", ("a", "b"))
    specs = inherited_specs([TaskSpec("sentiment", "classification", ("positive",)), demo_specs[1], topic],
                            str(tiny_model_dir))
    assert specs[0] == demo_specs[0]   # the head's own label order, though the new data lacks a label
    settings = ModelConfig(encoder="unused", max_length=16, init_from=str(tiny_model_dir))
    original = Predictor.from_folder(tiny_model_dir, pack_for_cpu=False).model
    from mtl.inference.model_folder import build_featurizer

    bundle = initial_bundle(settings, specs, build_featurizer(ModelConfig(encoder=str(tiny_model_dir))))
    for name, tensor in original.encoder.state_dict().items():
        assert torch.equal(bundle.model.encoder.state_dict()[name], tensor), name
    for name, tensor in original.heads.state_dict().items():
        assert torch.equal(bundle.model.heads.state_dict()[name], tensor), name
    assert "topic.classifier.weight" in bundle.model.heads.state_dict()
    assert bundle.settings.encoder == "unused"   # the saved settings name the base encoder, not the folder
    with pytest.raises(DataError, match="'neutral'"):
        inherited_specs([TaskSpec("sentiment", "classification", ("negative", "neutral"))], str(tiny_model_dir))


@pytest.mark.ray
@pytest.mark.slow
def test_continuous_training_runs_once_around_the_loop_and_mlflow_has_the_runs(ray_local, store, tiny_encoder_dir,
                                                                               tmp_path):
    import importlib.util

    from conftest import REPO
    from mlflow import MlflowClient

    spec = importlib.util.spec_from_file_location("continuous_training", REPO / "scripts" / "continuous_training.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    outcome = script.main(["--encoder", str(tiny_encoder_dir), "--work", str(tmp_path / "ct"), "--examples", "40",
                           "--resamples", "100"])
    assert (outcome["first"], outcome["second"]) == ("1", "2")
    assert outcome["production"] == ("2" if outcome["promoted"] else "1")
    history = registry.alias_history(script.MODEL_NAME)
    assert history[0]["version"] == "1" and history[0]["reason"] == "the first model"
    assert len(history) == (2 if outcome["promoted"] else 1)
    # round 2 continued from round 1's model: its config names the version's folder
    second = json.loads((tmp_path / "ct" / "round-2" / "best" / "mtl.json").read_text())
    first_folder = registry.resolve_model(f"models:/{script.MODEL_NAME}/1")
    assert second["metadata"]["config"]["model"]["init_from"] == first_folder

    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([client.get_experiment_by_name(script.MODEL_NAME).experiment_id])
    assert len(runs) == 2
    run = runs[-1]
    assert run.data.params["train.max_examples_per_task"] == "40" and run.data.params["tasks.1.name"] == "ner"
    assert [metric.step for metric in client.get_metric_history(run.info.run_id, "ner/f1")] == [
        entry["step"] for entry in json.loads((tmp_path / "ct" / "round-1" / "metrics.json").read_text())["history"]]
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"model", "metrics.json", "learning_curve_ner.png"} <= artifacts
    version = client.get_model_version(script.MODEL_NAME, "1")
    assert version.tags[registry.VERSION_TAG] == model_version(tmp_path / "ct" / "round-1" / "best")


@pytest.mark.slow
def test_the_mlflow_ui_serves_the_embedded_store(store, tiny_model_dir, tmp_path):
    import subprocess
    import sys
    import time

    import requests
    from conftest import free_port

    _version("m", tiny_model_dir)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                page = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and server.poll() is None, "mlflow server did not start"
                time.sleep(1)
        assert page.status_code == 200 and "MLflow" in page.text
        models = requests.get(f"http://127.0.0.1:{port}/api/2.0/mlflow/registered-models/search", timeout=10).json()
        assert [model["name"] for model in models["registered_models"]] == ["m"]
    finally:
        server.terminate()
        server.wait(timeout=30)
