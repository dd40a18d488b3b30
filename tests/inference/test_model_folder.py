import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel

from mtl.errors import ModelFolderError
from mtl.inference.model_folder import (
    HEADS_FILE,
    SPEC_FILE,
    EncoderShape,
    encoder_config,
    encoder_shape,
    load_model_folder,
    save_model_folder,
)
from mtl.inference.predictor import Predictor

TEXTS = ["Alice Martin flew to Paris with Acme Corp.", "terrible service", "ok"]


def assert_same_predictions(first, second):
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.embedding, b.embedding)
        assert a.labels == b.labels
        assert a.entities == b.entities


def test_save_then_load_gives_identical_predictions(tiny_bundle, tmp_path):
    with torch.no_grad():  # heads away from their init so that a missed load would show
        for parameter in tiny_bundle.model.heads.parameters():
            parameter.add_(torch.randn_like(parameter))
    before = Predictor(tiny_bundle, device="cpu").predict(TEXTS)
    save_model_folder(tiny_bundle, tmp_path / "model", metadata={"metrics": {"combined": 0.5}})
    loaded = load_model_folder(tmp_path / "model")
    assert_same_predictions(before, Predictor(loaded, device="cpu").predict(TEXTS))
    assert loaded.metadata["metrics"] == {"combined": 0.5}
    assert [spec.name for spec in loaded.specs] == ["sentiment", "ner"]
    assert loaded.featurizer.max_length == 64


def test_folder_has_no_pickle_and_loads_with_automodel(tiny_bundle, tmp_path):
    folder = save_model_folder(tiny_bundle, tmp_path / "model")
    names = {path.name for path in folder.iterdir()}
    assert {"model.safetensors", "config.json", HEADS_FILE, SPEC_FILE, "tokenizer.json"} <= names
    assert not [name for name in names if name.endswith((".bin", ".pt", ".pkl", ".pickle", ".pth"))]
    encoder = AutoModel.from_pretrained(folder)
    original = tiny_bundle.model.encoder.transformer.state_dict()
    for name, tensor in encoder.state_dict().items():
        torch.testing.assert_close(tensor, original[name])
    description = json.loads((folder / SPEC_FILE).read_text())
    assert description["tasks"][1]["labels"][0] == "O"
    assert description["model"]["pooling"] == "mean"


def test_a_ddp_style_wrapper_saves_without_module_prefixes(tiny_bundle, tmp_path):
    class Wrapped(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    tiny_bundle.model = Wrapped(tiny_bundle.model)
    folder = save_model_folder(tiny_bundle, tmp_path / "model")
    load_model_folder(folder)  # strict head loading would fail on "module." keys


def test_not_a_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelFolderError, match="not a model folder"):
        load_model_folder(tmp_path)


def test_newer_format_version_is_refused(tiny_bundle, tmp_path):
    folder = save_model_folder(tiny_bundle, tmp_path / "model")
    description = json.loads((folder / SPEC_FILE).read_text())
    (folder / SPEC_FILE).write_text(json.dumps({**description, "format_version": 99}))
    with pytest.raises(ModelFolderError, match="format_version 99"):
        load_model_folder(folder)


def test_an_encoder_on_object_storage_trains_from_this_nodes_copy_fetched_once_per_version(
        bucket, tiny_encoder_dir, demo_specs, tmp_path, monkeypatch):
    from mtl import storage
    from mtl.config import ModelConfig
    from mtl.inference.model_folder import build_model, resolve_encoder

    monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / "cache"))  # a cache of its own: the session's is counted
    uri = f"{bucket}/encoders/tiny"
    storage.upload_folder(tiny_encoder_dir, uri)
    copy = resolve_encoder(uri)
    assert resolve_encoder(uri) == copy  # the second model on this node reads the same copy
    assert Path(copy).parent == tmp_path / "cache" / "models"
    torch.manual_seed(0)
    remote = build_model(ModelConfig(encoder=uri, max_length=16), demo_specs)
    torch.manual_seed(0)
    local = build_model(ModelConfig(encoder=str(tiny_encoder_dir), max_length=16), demo_specs)
    assert_same_predictions(Predictor(remote, device="cpu").predict(TEXTS),
                            Predictor(local, device="cpu").predict(TEXTS))

    config = json.loads(storage.read_text(f"{uri}/config.json"))
    storage.write_text(f"{uri}/config.json", json.dumps({**config, "hidden_dropout_prob": 0.2}))  # replaced in place
    replaced = resolve_encoder(uri)
    assert replaced != copy and json.loads((Path(replaced) / "config.json").read_text())["hidden_dropout_prob"] == 0.2
    with pytest.raises(FileNotFoundError, match="encoders/absent"):
        resolve_encoder(f"{bucket}/encoders/absent")


def test_the_encoders_shape_is_read_as_json_and_through_transformers_for_other_names(tiny_model_dir, tmp_path):
    config = encoder_config(tiny_model_dir)
    assert encoder_shape(tiny_model_dir) == EncoderShape(config.hidden_size, config.num_hidden_layers,
                                                         config.num_attention_heads) == EncoderShape(32, 2, 2)
    distilbert = {"model_type": "distilbert", "dim": 48, "n_layers": 3, "n_heads": 4, "hidden_dim": 96}
    (tmp_path / "config.json").write_text(json.dumps(distilbert))
    assert encoder_shape(tmp_path) == EncoderShape(48, 3, 4)
