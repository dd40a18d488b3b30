"""Shared fixtures: offline Hugging Face, a tiny random BERT built once per session, demo specs.

Unit tests use the tiny BERT (random weights, the real MiniLM tokenizer) so that they run in
milliseconds; only the tests that check real-encoder behavior load all-MiniLM-L6-v2.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Ray advertises the machine's routable address unless told it is not a cluster: keep tests on loopback
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DEMO = REPO / "data" / "demo"
OBJECT_STORE_BYTES = 100 * 1024**2


def shared_data(relative: str) -> Path:
    """A file under ../shared/data, or skip the test when the folder is not there (a user's clone)."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data not present: {path}")
    return path


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BERT with the MiniLM tokenizer, saved as a Hugging Face folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from mtl.checkpoint import resolve_encoder

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder("all-MiniLM-L6-v2"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    folder = tmp_path_factory.mktemp("tiny-bert")
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def demo_specs():
    """The demo data's task specs: sentiment (classification) and ner (tagging)."""
    from mtl.tasks import TaskSpec

    return [
        TaskSpec("sentiment", "classification", ("negative", "positive")),
        TaskSpec("ner", "tagging", ("O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER")),
    ]


@pytest.fixture
def tiny_bundle(tiny_encoder_dir, demo_specs):
    """A fresh multi-task model on the tiny encoder (new per test, so tests may train or freeze it)."""
    import torch

    from mtl.checkpoint import build_model
    from mtl.config import ModelConfig

    torch.manual_seed(0)
    return build_model(ModelConfig(encoder=str(tiny_encoder_dir), max_length=64), demo_specs)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_encoder_dir, demo_specs) -> Path:
    """A saved model folder of the tiny encoder with the demo heads (max length 16), shared read-only."""
    import torch

    from mtl.checkpoint import build_model, save_model_folder
    from mtl.config import ModelConfig

    torch.manual_seed(0)
    bundle = build_model(ModelConfig(encoder=str(tiny_encoder_dir), max_length=16), demo_specs)
    return save_model_folder(bundle, tmp_path_factory.mktemp("tiny-model") / "model",
                             metadata={"trained_at": "2026-11-24T00:00:00+00:00", "metrics": {"combined": 0.5}})


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session, on loopback, shut down at the end.

    ``address="local"``: never join a cluster that `ray start` left on this machine.
    Its object store is deliberately small (100 MiB), so that streaming tests show that a corpus
    larger than the store flows through instead of piling up in it.
    """
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, object_store_memory=OBJECT_STORE_BYTES)
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    yield ray
    ray.shutdown()
