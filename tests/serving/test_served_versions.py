"""Serving versions without Ray: the A/B router, variants in the API, and a replica's model
following a registry alias to a new version (and back) while requests keep being answered."""

import shutil
from collections import Counter

import pytest
from fastapi.testclient import TestClient
from sinks import RecordingSink

from mtl.inference.model_folder import HEADS_FILE, model_version
from mtl.inference.predictor import Predictor
from mtl.lifecycle import registry
from mtl.serving.api import create_api
from mtl.serving.routing import Loaded, PredictorBackend, Router, Variant, model_info
from mtl.serving.schema import ServiceSettings, VariantSettings
from mtl.serving.served_model import ServedModel


def _variant(name: str, weight: float, folder) -> Variant:
    return Variant(name, weight, Loaded(PredictorBackend(Predictor.from_folder(folder)),
                                        model_info(str(folder)).model_copy(update={"variant": name})))


@pytest.fixture(scope="module")
def second_model(tiny_model_dir, tmp_path_factory):
    """Another version of the tiny model: its sentiment head's bias moved, so its hash differs."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("second") / "model"
    shutil.copytree(tiny_model_dir, folder)
    heads = load_file(str(folder / HEADS_FILE))
    heads["sentiment.classifier.bias"] = heads["sentiment.classifier.bias"] + 1.0
    save_file(heads, str(folder / HEADS_FILE))
    assert model_version(folder) != model_version(tiny_model_dir)
    return folder


def test_the_router_splits_by_weight_and_keeps_a_client_key_on_one_variant(tiny_model_dir, second_model):
    router = Router([_variant("control", 9, tiny_model_dir), _variant("candidate", 1, second_model)], seed=0)
    shares = Counter(router.choose().name for _ in range(5000))
    assert shares["candidate"] / 5000 == pytest.approx(0.1, abs=0.015)
    assert {router.choose("client-7").name for _ in range(50)} == {router.choose("client-7").name}
    keyed = Counter(router.choose(f"client-{number}").name for number in range(5000))
    assert keyed["candidate"] / 5000 == pytest.approx(0.1, abs=0.015)


def test_every_response_names_the_variant_and_version_that_answered(tiny_model_dir, second_model):
    router = Router([_variant("control", 1, tiny_model_dir), _variant("candidate", 1, second_model)])
    sink = RecordingSink()
    client = TestClient(create_api(router, ServiceSettings(variants=[
        VariantSettings(name="control", model=str(tiny_model_dir), weight=1),
        VariantSettings(name="candidate", model=str(second_model), weight=1)]), sink=sink))
    versions = {"control": model_version(tiny_model_dir), "candidate": model_version(second_model)}
    for number in range(20):
        body = client.post("/v1/predict", json={"texts": ["a fine film"]}, headers={"X-Client-Key": f"c{number}"})
        assert body.status_code == 200
        assert body.json()["model"] == versions[body.json()["variant"]]
        described = client.get("/v1/model", headers={"X-Client-Key": f"c{number}"}).json()
        assert (described["variant"], described["version"]) == (body.json()["variant"], body.json()["model"])
    assert {variant for _, variant, _, _, _ in sink.requests} == {"control", "candidate"}
    assert all(route == "/v1/predict" and status == 200 and seconds > 0
               for route, _, _, status, seconds in sink.requests)


def test_settings_take_a_model_or_variants_with_distinct_names():
    with pytest.raises(ValueError, match="not both"):
        ServiceSettings()
    with pytest.raises(ValueError, match="own name"):
        ServiceSettings(variants=[VariantSettings(name="a", model="x", weight=1)] * 2)
    with pytest.raises(ValueError, match="model_deployment"):
        ServiceSettings(model_deployment=True, variants=[VariantSettings(name="a", model="x", weight=1),
                                                          VariantSettings(name="b", model="y", weight=1)])


def test_a_replica_follows_its_alias_to_a_new_version_and_back(tiny_model_dir, second_model, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for folder in (tiny_model_dir, second_model):
        registry.register("live", source=str(folder), run_id=None, model_version=model_version(folder))
    registry.move_alias("live", "1", reason="first")
    served = ServedModel(VariantSettings(name="default", model="models:/live@production", weight=1),
                         lambda folder: PredictorBackend(Predictor.from_folder(folder)), reload_interval_s=0)
    client = TestClient(create_api(Router([served.variant]), ServiceSettings(model="models:/live@production")))

    def answered() -> str:
        response = client.post("/v1/embed", json={"texts": ["Bob works at Hooli"]})
        assert response.status_code == 200
        return response.json()["model"]

    assert answered() == model_version(tiny_model_dir) and not served.reload()
    registry.move_alias("live", "2", reason="promoted")
    assert served.reload() and answered() == model_version(second_model)
    assert client.get("/v1/model").json()["registered"] == "models:/live@production"
    registry.rollback("live", reason="rolled back")
    assert served.reload() and answered() == model_version(tiny_model_dir)
