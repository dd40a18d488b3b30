"""The endpoint's HTTP API without Ray: routes, limits, error bodies, cache (FastAPI's TestClient)."""

import json
from typing import Annotated

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mtl.inference.predictor import Predictor
from mtl.serving.api import create_api
from mtl.serving.cache import AnswerCache
from mtl.serving.routing import PredictorBackend, model_info, single_model
from mtl.serving.schema import NOT_BLANK, ServiceSettings

LIMITS = {"max_texts": 4, "max_chars": 200, "max_body_bytes": 4_000, "max_batch_texts": 8}


def make_client(model_dir, backend=None, **settings) -> TestClient:
    settings = ServiceSettings(model=str(model_dir), **{**LIMITS, **settings})
    backend = backend or PredictorBackend(Predictor.from_folder(model_dir, device="cpu", max_chars=settings.max_chars))
    return TestClient(create_api(single_model(backend, model_info(str(model_dir))), settings))


@pytest.fixture(scope="module")
def client(tiny_model_dir):
    return make_client(tiny_model_dir)


def test_embed_returns_one_vector_per_text_equal_to_the_predictor(client, tiny_model_dir):
    texts = ["Alice flew to Paris.", "a fine film"]
    response = client.post("/v1/embed", json={"texts": texts})
    assert response.status_code == 200
    body = response.json()
    assert body["dimension"] == 32 and len(body["embeddings"]) == 2
    expected = Predictor.from_folder(tiny_model_dir, device="cpu").embed(texts)
    for vector, prediction in zip(body["embeddings"], expected):
        np.testing.assert_allclose(vector, prediction.embedding, rtol=1e-5, atol=1e-6)


def test_predict_runs_every_task_by_default_and_only_the_asked_ones_otherwise(client):
    everything = client.post("/v1/predict", json={"texts": ["Bob works at Hooli"]}).json()["results"][0]
    assert set(everything["labels"]) == {"sentiment"} and set(everything["entities"]) == {"ner"}
    assert everything["embedding"] is None
    label = everything["labels"]["sentiment"]
    assert label["label"] in ("negative", "positive") and abs(sum(label["probabilities"].values()) - 1) < 1e-5
    only = client.post("/v1/predict", json={"texts": ["Bob"], "tasks": ["ner"], "embedding": True}).json()
    assert set(only["results"][0]["labels"]) == set() and set(only["results"][0]["entities"]) == {"ner"}
    assert len(only["results"][0]["embedding"]) == 32


def test_model_describes_tasks_labels_version_and_metrics(client, tiny_model_dir):
    info = client.get("/v1/model").json()
    assert [task["name"] for task in info["tasks"]] == ["sentiment", "ner"]
    assert info["tasks"][0]["labels"] == ["negative", "positive"]
    assert info["embedding_dimension"] == 32 and len(info["version"]) == 12
    assert info["metrics"] == {"combined": 0.5} and info["trained_at"].startswith("2026-11-24")


def test_healthz_is_ok_when_the_backend_answers_and_503_when_not(client, tiny_model_dir):
    assert client.get("/healthz").json() == {"status": "ok"}

    class Down(PredictorBackend):
        async def healthy(self):
            return False

    down = make_client(tiny_model_dir, backend=Down(None))
    response = down.get("/healthz")
    assert response.status_code == 503 and "not loaded" in response.json()["error"]


def test_docs_and_openapi_carry_the_limits_and_task_names(client):
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    texts = schema["PredictRequest"]["properties"]["texts"]
    assert texts["maxItems"] == 4 and texts["items"]["maxLength"] == 200
    assert "ner" in json.dumps(schema["PredictRequest"]["properties"]["tasks"])


@pytest.mark.parametrize("body, where", [
    ({"texts": []}, "texts"),
    ({"texts": ["a"] * 5}, "texts"),
    ({"texts": ["x" * 201]}, "texts.0"),
    ({"texts": ["fine", "   "]}, "texts.1"),
    ({"texts": ["fine", 7]}, "texts.1"),
    ({"texts": "not a list"}, "texts"),
    ({"texts": ["a"], "tasks": ["nope"]}, "tasks.0"),
    ({"texts": ["a"], "embedding": "yes"}, "embedding"),
    ({"texts": ["a"], "surprise": 1}, "surprise"),
    ({}, "texts"),
])
def test_bad_requests_get_422_naming_the_field(client, body, where):
    response = client.post("/v1/predict", json=body)
    assert response.status_code == 422
    assert response.json()["error"].startswith(f"{where}:"), response.json()


def test_malformed_json_gets_422_and_a_huge_body_gets_413(client):
    broken = client.post("/v1/embed", content=b'{"texts": ["a"', headers={"content-type": "application/json"})
    assert broken.status_code == 422 and "JSON" in broken.json()["error"]
    huge = client.post("/v1/embed", content=b'{"texts": ["' + b"a" * 5_000_000 + b'"]}',
                       headers={"content-type": "application/json"})
    assert huge.status_code == 413 and "4000 bytes" in huge.json()["error"]


def test_a_chunked_body_without_length_is_cut_off_at_the_limit(client):
    def chunks():
        yield b'{"texts": ["'
        for _ in range(100):
            yield b"a" * 100
        yield b'"]}'

    response = client.post("/v1/embed", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_cache_answers_repeated_texts_without_the_backend(tiny_model_dir):
    calls = []

    class Counting(PredictorBackend):
        async def predict(self, texts, tasks):
            calls.append(list(texts))
            return await super().predict(texts, tasks)

    backend = Counting(Predictor.from_folder(tiny_model_dir, device="cpu"))
    cached = make_client(tiny_model_dir, backend=backend, cache_size=10)
    first = cached.post("/v1/predict", json={"texts": ["same text", "other"]}).json()
    second = cached.post("/v1/predict", json={"texts": ["other", "same text", "new"]}).json()
    assert calls == [["same text", "other"], ["new"]]
    assert second["results"][1] == first["results"][0]


def test_answer_cache_is_bounded_and_keyed_by_tasks():
    cache = AnswerCache(2)
    cache.put("a", ("x",), "A")
    cache.put("b", ("x",), "B")
    cache.get("a", ("x",))  # a is now the most recent
    cache.put("c", ("x",), "C")
    assert cache.get("b", ("x",)) is None and cache.get("a", ("x",)) == "A" and cache.get("c", ("x",)) == "C"
    assert cache.get("a", ("y",)) is None
    assert AnswerCache(0).get("a", ()) is None


def test_settings_refuse_more_texts_per_request_than_per_batch():
    with pytest.raises(ValueError, match="max_texts"):
        ServiceSettings(model="m", max_texts=100, max_batch_texts=10)


def test_the_not_blank_pattern_means_what_python_means_in_every_regex_engine():
    """pydantic (Rust's regex), Python and the schema's clients (ECMAScript) read ``\\s`` apart:
    the pattern lists every space character, and pydantic then agrees with str.isspace() on every
    code point (once, U+0085 passed the schema and was refused by the API)."""
    from pydantic import StringConstraints, TypeAdapter, ValidationError

    assert "\\s" not in NOT_BLANK
    not_blank = TypeAdapter(Annotated[str, StringConstraints(pattern=NOT_BLANK)])
    disagreements = []
    for code_point in (*range(0xD800), *range(0xE000, 0x3100)):
        character = chr(code_point)
        try:
            not_blank.validate_python(character)
            accepted = True
        except ValidationError:
            accepted = False
        if accepted == character.isspace():
            disagreements.append(hex(code_point))
    assert disagreements == []
