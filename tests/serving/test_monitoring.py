"""What the endpoint watches, without Ray: the demo page's routes (/, /v1/inspect), drift against
the model folder's reference (/v1/drift, warnings), sampled request logs, and the metric events."""

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from sinks import RecordingSink

from mtl.inference.predictor import Predictor
from mtl.inference.reference import read_reference, store_reference
from mtl.serving.api import create_api
from mtl.serving.inspection import inspect_text
from mtl.serving.routing import PredictorBackend, model_info, single_model
from mtl.serving.schema import ServiceSettings

SHORT_NEWS = ["Bob flew to Paris.", "Acme Corp hired Ann.", "Rain in Oslo today.", "Sam met Kim in Rome."]


@pytest.fixture(scope="module")
def watched_model(tiny_model_dir, tmp_path_factory):
    """The tiny model with reference statistics of short news-like sentences."""
    folder = tmp_path_factory.mktemp("watched") / "model"
    shutil.copytree(tiny_model_dir, folder)
    store_reference(folder, SHORT_NEWS * 25)
    return folder


def make_client(folder, sink=None, **settings) -> TestClient:
    settings = ServiceSettings(model=str(folder), **settings)
    predictor = Predictor.from_folder(folder, device="cpu", max_chars=settings.max_chars)
    router = single_model(PredictorBackend(predictor), model_info(str(folder)), read_reference(folder))
    return TestClient(create_api(router, settings, sink))


def test_the_demo_page_and_its_files_are_served_at_the_root(tiny_model_dir):
    client = make_client(tiny_model_dir)
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="web/app.js"' in page.text and 'href="web/style.css"' in page.text
    script = client.get("/web/app.js")
    assert script.status_code == 200 and "v1/inspect" in script.text
    assert "http" not in script.text.replace("HTTP ", "")   # nothing is loaded from elsewhere
    assert client.get("/web/style.css").status_code == 200
    assert "/" not in client.get("/openapi.json").json()["paths"]   # the page is no API route


def test_inspect_gives_the_tokens_their_tags_and_one_heads_attention(tiny_model_dir):
    client = make_client(tiny_model_dir)
    text = "Alice flew to Paris"
    body = client.post("/v1/inspect", json={"text": text, "layer": -1, "head": 1}).json()
    predictor = Predictor.from_folder(tiny_model_dir, device="cpu")
    ids = predictor.featurizer.tokenizer(text)["input_ids"]
    assert body["tokens"] == predictor.featurizer.tokenizer.convert_ids_to_tokens(ids)
    assert (body["layer"], body["head"], body["layers"], body["heads"]) == (1, 1, 2, 2)
    attention = np.array(body["attention"])
    assert attention.shape == (len(ids), len(ids))
    np.testing.assert_allclose(attention.sum(axis=1), 1, atol=1e-3)   # each row is a distribution
    # by hand: softmax(q k / sqrt(d)) of the last layer's second head, from the states that enter that layer
    inputs = {name: torch.tensor([values]) for name, values in predictor.featurizer.tokenizer(text).items()}
    bert = predictor.model.encoder.transformer
    with torch.inference_mode():
        entering = bert(**inputs, output_hidden_states=True).hidden_states[1][0]
        attention_layer = bert.encoder.layer[1].attention.self
        width = attention_layer.attention_head_size
        query = attention_layer.query(entering)[:, width:2 * width]
        key = attention_layer.key(entering)[:, width:2 * width]
        expected = torch.softmax(query @ key.T / width**0.5, dim=-1).numpy()
    np.testing.assert_allclose(attention, expected, atol=1e-4)
    tags = body["tags"]["ner"]
    assert len(tags) == len(ids) and all(0 < tag["score"] <= 1 for tag in tags)
    assert set(body["tags"]) == {"ner"}   # tagging tasks only


def test_inspecting_leaves_the_predictions_as_they_were(tiny_model_dir):
    predictor = Predictor.from_folder(tiny_model_dir, device="cpu")
    before = predictor.embed(["Alice flew to Paris"])[0].embedding
    inspect_text(predictor, "Alice flew to Paris")
    np.testing.assert_array_equal(predictor.embed(["Alice flew to Paris"])[0].embedding, before)
    assert predictor.model.encoder.transformer.config._attn_implementation != "eager"


@pytest.mark.parametrize("request_body, field", [
    ({"text": "x", "layer": 2}, "layer"), ({"text": "x", "head": -3}, "head"), ({"text": "   "}, "text"),
    ({"text": "x" * 2001}, "text")])
def test_inspect_requests_out_of_range_get_a_422_naming_the_field(tiny_model_dir, request_body, field):
    response = make_client(tiny_model_dir).post("/v1/inspect", json=request_body)
    assert response.status_code == 422 and response.json()["error"].startswith(f"{field}:")


def test_drift_is_scored_against_the_reference_and_warned_of_once_past_the_threshold(watched_model, caplog):
    reference = read_reference(watched_model)
    assert reference.texts == 100 and set(reference.labels) == {"sentiment", "ner"}
    client = make_client(watched_model, drift={"window": 50, "min_window": 20})
    empty = client.get("/v1/drift").json()["variants"][0]
    assert empty["reference"] and empty["window"] == 0 and empty["scores"] == {}
    for _ in range(6):   # like the reference: nothing drifts
        assert client.post("/v1/predict", json={"texts": SHORT_NEWS}).status_code == 200
    calm = client.get("/v1/drift").json()["variants"][0]
    assert calm["window"] == 24 and calm["drifted"] == []
    assert calm["scores"]["length"] == pytest.approx(0, abs=1e-6)
    assert calm["scores"]["embedding"] == pytest.approx(0, abs=1e-5)
    long_texts = [f"{'A much longer text than any the reference held, ' * 3}number {index}." for index in range(50)]
    with caplog.at_level(logging.WARNING, logger="mtl.serving.deployments"):
        for start in range(0, 50, 10):
            client.post("/v1/embed", json={"texts": long_texts[start:start + 10]})
    drifted = client.get("/v1/drift").json()["variants"][0]
    assert drifted["window"] == 50 and {"length", "embedding"} <= set(drifted["drifted"])
    assert drifted["scores"]["length"] > 1
    warnings = [record.getMessage() for record in caplog.records if "drift:" in record.getMessage()]
    assert len([message for message in warnings if message.startswith("drift: length")]) == 1   # once, not per request
    assert "past its threshold 0.25" in warnings[0]


def test_a_model_without_reference_statistics_reports_no_scores(tiny_model_dir):
    client = make_client(tiny_model_dir, drift={"window": 10, "min_window": 1})
    client.post("/v1/predict", json={"texts": ["a fine film"]})
    assert client.get("/v1/drift").json()["variants"][0] == {
        "variant": "default", "model": model_info(str(tiny_model_dir)).version, "window": 0, "scores": {},
        "thresholds": {"psi": 0.25, "embedding": 0.25}, "drifted": [], "reference": False}


def test_the_sink_hears_of_every_request_and_of_cache_hits(watched_model):
    sink = RecordingSink()
    client = make_client(watched_model, sink=sink, cache_size=8, drift={"window": 10, "min_window": 2})
    client.post("/v1/predict", json={"texts": ["Bob flew to Paris.", "Ann"]})
    client.post("/v1/predict", json={"texts": ["Bob flew to Paris."]})
    client.post("/v1/predict", json={"texts": ["   "]})
    assert [(route, status) for route, _, _, status, _ in sink.requests] == [("/v1/predict", 200)] * 2 + [
        ("/v1/predict", 422)]
    assert [(texts, hits) for _, _, _, texts, hits in sink.served] == [
        (["Bob flew to Paris.", "Ann"], 0), (["Bob flew to Paris."], 1)]
    assert [report.window for report in sink.drift_reports] == [2, 3]


def test_sampled_request_logs_leave_the_text_out_unless_asked(watched_model, tmp_path):
    private = make_client(watched_model, request_log={"path": str(tmp_path / "private.jsonl"), "sample_rate": 1})
    private.post("/v1/predict", json={"texts": ["Bob flew to Paris."]})
    private.post("/v1/embed", json={"texts": ["Bob", "Ann"]})
    first, second = [json.loads(line) for line in (tmp_path / "private.jsonl").read_text().splitlines()]
    assert (first["route"], first["status"], first["texts"], first["variant"]) == ("/v1/predict", 200, 1, "default")
    assert set(first["labels"][0]) == {"sentiment", "ner"} and first["latency_ms"] > 0 and "text" not in first
    assert second["labels"] == [{}, {}] and second["model"] == model_info(str(watched_model)).version
    with_text = make_client(watched_model, request_log={"path": str(tmp_path / "texts.jsonl"), "sample_rate": 1,
                                                        "include_text": True})
    with_text.post("/v1/predict", json={"texts": ["Bob flew to Paris."]})
    assert json.loads((tmp_path / "texts.jsonl").read_text())["text"] == ["Bob flew to Paris."]
    sampled = make_client(watched_model, request_log={"path": str(tmp_path / "sampled.jsonl"), "sample_rate": 0.1})
    for _ in range(200):
        sampled.post("/v1/embed", json={"texts": ["Bob"]})
    assert 5 <= len((tmp_path / "sampled.jsonl").read_text().splitlines()) <= 40
