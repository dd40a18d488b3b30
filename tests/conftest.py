"""Shared fixtures: offline Hugging Face, a tiny random BERT built once per session, demo specs.

Unit tests use the tiny BERT (random weights, the real MiniLM tokenizer) so that they run in
milliseconds; only the tests that check real-encoder behavior load all-MiniLM-L6-v2.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Ray advertises the machine's routable address unless told it is not a cluster: keep tests on loopback
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Ray 2.60 turns token auth on for a new local cluster and, with no token set, writes one to
# ~/.ray/auth_token: give the session its own token so nothing lands in the user's home
os.environ["RAY_AUTH_MODE"] = "token"
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DEMO = REPO / "data" / "demo"
OBJECT_STORE_BYTES = 100 * 1024**2
# Ray keeps about one idle worker process per CPU and ends the rest a second after their task: with
# the actors of a training run alive, every Ray Data read then starts and imports a new process,
# seconds each on 2 CPUs. Kept idle, they serve every later test (a tiny two-worker fit: 60 s -> 28 s).
WARM_WORKER_POOL = {"num_workers_soft_limit": 24}


def shared_data(relative: str) -> Path:
    """A file under ../shared/data, or skip the test when the folder is not there (a user's clone)."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data not present: {path}")
    return path


def pytest_collection_modifyitems(items):
    """A test that uses the session's Ray is in the ``ray`` tier, whether or not it says so: plain
    ``pytest`` (the unit tier) then never starts Ray."""
    for item in items:
        if "ray_local" in item.fixturenames and not item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BERT with the MiniLM tokenizer, saved as a Hugging Face folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from mtl.inference.model_folder import resolve_encoder

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

    from mtl.config import ModelConfig
    from mtl.inference.model_folder import build_model

    torch.manual_seed(0)
    return build_model(ModelConfig(encoder=str(tiny_encoder_dir), max_length=64), demo_specs)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_encoder_dir, demo_specs) -> Path:
    """A saved model folder of the tiny encoder with the demo heads (max length 16), shared read-only."""
    import torch

    from mtl.config import ModelConfig
    from mtl.inference.model_folder import build_model, save_model_folder

    torch.manual_seed(0)
    bundle = build_model(ModelConfig(encoder=str(tiny_encoder_dir), max_length=16), demo_specs)
    return save_model_folder(bundle, tmp_path_factory.mktemp("tiny-model") / "model",
                             metadata={"trained_at": "2026-11-24T00:00:00+00:00", "metrics": {"combined": 0.5}})


@pytest.fixture(scope="session", autouse=True)
def home_is_left_alone():
    """Nothing the tests run may write Ray's token into the user's home folder."""
    token = Path.home() / ".ray" / "auth_token"
    existed = token.exists()
    yield
    assert existed or not token.exists(), f"the test session wrote {token}"


@pytest.fixture(scope="session", autouse=True)
def mlflow_store(tmp_path_factory) -> str:
    """MLflow's tracking and registry store for the session, never the repository's runs/mlflow.db."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    return uri


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory) -> Path:
    """Remote model folders are cached in the session's temp folder, not in the user's home."""
    folder = tmp_path_factory.mktemp("mtl-cache")
    os.environ["MTL_CACHE_DIR"] = str(folder)
    return folder


def dictionary_encoded_columns(path: Path) -> list[str]:
    """The columns of a Parquet file that any of its row groups stores with a dictionary."""
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path).metadata
    columns = set()
    for number in range(metadata.num_row_groups):
        chunks = map(metadata.row_group(number).column, range(metadata.num_columns))
        columns |= {chunk.path_in_schema for chunk in chunks if "RLE_DICTIONARY" in chunk.encodings}
    return sorted(columns)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto's server mode) on 127.0.0.1 for the whole session.

    Its address and test credentials go into the environment before Ray starts (``ray_local``
    depends on this fixture), so that Ray's workers reach the same server. Yields its endpoint.
    """
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    settings = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    yield endpoint
    server.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def bucket(s3_server, request) -> str:
    """A new, empty bucket on the session's S3 server; yields its ``s3://`` URI."""
    import boto3

    name = f"t-{secrets.token_hex(6)}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return f"s3://{name}"


def s3_keys(bucket_uri: str, prefix: str = "") -> list[str]:
    """Every key in a bucket of the session's S3 server (under ``prefix``)."""
    import boto3

    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket_uri.removeprefix("s3://"), Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """One local Ray for the whole session, on loopback, shut down at the end.

    ``address="local"``: never join a cluster that `ray start` left on this machine.
    Its object store is deliberately small (100 MiB), so that streaming tests show that a corpus
    larger than the store flows through instead of piling up in it.
    """
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             object_store_memory=OBJECT_STORE_BYTES, _system_config=WARM_WORKER_POOL)
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def hermetic_serve_config():
    """A function making a Serve config (serve_config.yaml as a dict) fit for a test module: HAProxy
    writes its files into a folder of the module's, removed at the end, instead of
    /tmp/haproxy-serve (the folder is short, as HAProxy's socket paths must be), and an HTTP replica
    being stopped drains for 2 s rather than high-throughput mode's 30 s, so that `serve.shutdown()`
    ends within its 30 s and the next module starts a Serve of its own."""
    from mtl.serving.haproxy import haproxy_file_locations

    folder = tempfile.mkdtemp(prefix="haproxy-")

    def hermetic(config: dict) -> dict:
        config["controller_options"]["runtime_env"]["env_vars"].update(
            haproxy_file_locations(folder), RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S="2")
        return config

    hermetic.haproxy_folder = Path(folder)
    yield hermetic
    shutil.rmtree(folder, ignore_errors=True)
