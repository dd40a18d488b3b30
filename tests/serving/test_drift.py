"""Drift scores without Ray: reference statistics, the population stability index, the sliding
window, and, on real data with the real encoder, news against tweets."""

import math
import random

import numpy as np
import pytest
from conftest import shared_data

from mtl.data.readers import read_rows
from mtl.inference.answers import Entity, Label, Prediction
from mtl.inference.predictor import Predictor
from mtl.inference.reference import NO_ENTITY, Reference, read_reference, reference_statistics, write_reference
from mtl.serving.drift import DriftThresholds, DriftWindow, population_stability_index
from mtl.task_config import DataSource


def test_psi_is_zero_for_equal_shares_and_matches_the_formula_by_hand():
    assert population_stability_index([0.5, 0.5], [0.5, 0.5]) == 0
    by_hand = (0.7 - 0.5) * math.log(0.7 / 0.5) + (0.3 - 0.5) * math.log(0.3 / 0.5)
    assert population_stability_index([0.5, 0.5], [0.7, 0.3]) == pytest.approx(by_hand)
    # a bin the reference never saw is floored, not infinite
    assert math.isfinite(population_stability_index([1.0, 0.0], [0.5, 0.5]))


def _prediction(vector, sentiment="positive", entities=()):
    return Prediction(embedding=np.asarray(vector, dtype=np.float32),
                      labels={"sentiment": Label(sentiment, 0.9, {})},
                      entities={"ner": [Entity(0, 1, label, "x", 0.9) for label in entities]})


def test_reference_statistics_count_lengths_labels_entity_types_and_the_embedding_spread():
    texts = ["a" * length for length in range(1, 101)]
    predictions = [_prediction([index % 2, 1 - index % 2], "positive" if index < 75 else "negative",
                               ["PER"] * (index % 3)) for index in range(100)]
    predictions[5] = Prediction(error="text is empty")   # not counted
    reference = reference_statistics(texts, predictions)
    assert reference.texts == 99
    assert len(reference.length_edges) == 9 and sum(reference.length_shares) == pytest.approx(1)
    assert all(0.08 <= share <= 0.12 for share in reference.length_shares)   # deciles
    assert reference.labels["sentiment"] == pytest.approx({"negative": 25 / 99, "positive": 74 / 99})
    assert set(reference.labels["ner"]) == {"PER", NO_ENTITY}
    vectors = np.array([predictions[index].embedding for index in range(100) if index != 5], dtype=float)
    assert reference.embedding_mean == pytest.approx(vectors.mean(axis=0).tolist())
    spread = np.sqrt(((vectors - vectors.mean(axis=0)) ** 2).sum(axis=1).mean())
    assert reference.embedding_spread == pytest.approx(spread)


def test_reference_is_stored_in_the_model_folder_and_read_back(tmp_path):
    reference = Reference(texts=3, length_edges=[2.0], length_shares=[0.5, 0.5], labels={"t": {"a": 1.0}},
                          embedding_mean=[0.0, 1.0], embedding_spread=0.5)
    assert read_reference(tmp_path) is None
    write_reference(tmp_path, reference)
    assert read_reference(tmp_path) == reference


def test_the_window_slides_and_is_scored_only_once_it_holds_min_window_texts():
    reference = Reference(texts=100, length_edges=[5.0], length_shares=[0.5, 0.5],
                          labels={"sentiment": {"negative": 0.5, "positive": 0.5}},
                          embedding_mean=[0.0, 0.0], embedding_spread=2.0)
    window = DriftWindow(reference, size=10, min_window=4, thresholds=DriftThresholds(psi=0.2, embedding=0.5))
    for _ in range(3):
        window.add("short", _prediction([1, 0]))
    assert window.report().scores == {} and window.report().window == 3
    for _ in range(10):   # the window now holds these ten alone: long texts, positive, embedding (0, 3)
        window.add("a much longer text", _prediction([0, 3]))
    report = window.report()
    assert report.window == 10
    assert report.scores["embedding"] == pytest.approx(3 / 2)
    assert report.scores["length"] == pytest.approx(population_stability_index([0.5, 0.5], [0, 1]))
    assert report.scores["labels/sentiment"] == pytest.approx(population_stability_index([0.5, 0.5], [0, 1]))
    assert set(report.drifted) == {"embedding", "length", "labels/sentiment"}
    for index in range(10):   # half short and negative, and embeddings around the reference mean
        window.add("tiny" if index % 2 else "a much longer text",
                   _prediction([0, 1 if index % 2 else -1], "negative" if index % 2 else "positive"))
    balanced = window.report()
    assert balanced.scores["embedding"] == pytest.approx(0) and balanced.drifted == []


def _conll_texts(path) -> list[str]:
    return [" ".join(row["tokens"]) for row in read_rows(DataSource(path=str(path), format="conll"), "tagging")]


@pytest.mark.real_data
def test_news_keeps_drift_low_and_tweets_drive_it_past_the_threshold(tmp_path, demo_specs):
    """The reference is CoNLL-2003 validation (Reuters news) as the real encoder embeds it."""
    import torch

    from mtl.config import ModelConfig
    from mtl.inference.model_folder import build_model, save_model_folder

    news = _conll_texts(shared_data("conll2003/valid.txt"))
    other_news = _conll_texts(shared_data("conll2003/train.txt"))
    tweets = _conll_texts(shared_data("wnut17/emerging.dev.conll"))
    torch.manual_seed(0)
    folder = save_model_folder(build_model(ModelConfig(), demo_specs), tmp_path / "model")
    predictor = Predictor.from_folder(folder, device="cpu")
    rng = random.Random(0)
    reference_sample = rng.sample(news, 600)
    reference = reference_statistics(reference_sample, predictor.predict(reference_sample))

    def scored(texts):
        window = DriftWindow(reference, size=300, min_window=300)
        for text, prediction in zip(texts, predictor.predict(texts)):
            window.add(text, prediction)
        return window.report()

    calm, drifted = scored(rng.sample(other_news, 300)), scored(rng.sample(tweets, 300))
    assert calm.drifted == [], calm.scores
    assert calm.scores["embedding"] < 0.15 and calm.scores["length"] < 0.15
    assert "embedding" in drifted.drifted and drifted.scores["embedding"] > 2 * calm.scores["embedding"]
    assert drifted.scores["length"] > calm.scores["length"]
