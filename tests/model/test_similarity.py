"""Similarity tasks and embedding preservation without Ray: reading pairs, their losses and metric,
the reference embeddings, and models that have a similarity task in the Predictor, label job and API."""


import numpy as np
import pyarrow as pa
import pytest
import torch
from fastapi.testclient import TestClient
from scipy import stats
from train_configs import demo_config, demo_texts, write_pairs

from mtl.config import EMBEDDING_METRICS, ModelConfig, validate_config
from mtl.data.readers import read_rows
from mtl.errors import ConfigError, DataError
from mtl.inference.model_folder import build_model, load_model_folder, save_model_folder
from mtl.inference.predictor import Predictor
from mtl.labeling.columns import BatchLabeler
from mtl.model.similarity import cosent_loss, in_batch_negatives_loss, preservation_loss
from mtl.serving.api import create_api
from mtl.serving.routing import PredictorBackend, model_info, single_model
from mtl.serving.schema import ServiceSettings
from mtl.task_config import DataSource
from mtl.tasks import TaskSpec
from mtl.train.preservation import REFERENCE, ReferenceEmbedder
from mtl.train.validation import add_counts, evaluate, evaluation_counts, reports_from_counts

SCORED = {"score_column": "score", "score_range": [0, 5]}


def test_sts_style_headerless_tsv_reads_as_scored_pairs(tmp_path):
    path = tmp_path / "sts.csv"
    path.write_text('genre\tfile\t2012\t0001\t4.200\tA "plane" takes off.\tAn air plane is taking off.\n'
                    "genre\tfile\t2012\t0002\t0.0\tA man sings.\tA cat sleeps.\tsource\textra\n")
    rows = read_rows(DataSource(path=str(path), format="tsv", header=False, text_column=5, pair_column=6,
                                score_column=4, score_range=(0, 5)), "similarity")
    assert rows == [{"text": 'A "plane" takes off.', "pair": "An air plane is taking off.", "score": 4.2,
                     "origin": f"{path}:1"},
                    {"text": "A man sings.", "pair": "A cat sleeps.", "score": 0.0, "origin": f"{path}:2"}]


def test_a_score_outside_its_range_or_a_missing_pair_names_the_file_and_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"text": "a", "pair": "b", "score": 1}\n{"text": "a", "pair": "b", "score": 7.5}\n')
    with pytest.raises(DataError, match=r"pairs.jsonl:2: score 7.5 is outside score_range \[0, 5\]"):
        read_rows(DataSource(path=str(path), **SCORED), "similarity")
    path.write_text('{"text": "a", "pair": "b", "score": "high"}\n')
    with pytest.raises(DataError, match=r"pairs.jsonl:1: score_column 'score' is 'high', not a number"):
        read_rows(DataSource(path=str(path), **SCORED), "similarity")
    path.write_text('{"text": "a", "pair": "b"}\n{"text": "a", "other": "b"}\n')
    with pytest.raises(DataError, match=r"pairs.jsonl:2: no pair_column 'pair'"):
        read_rows(DataSource(path=str(path)), "similarity")


def test_config_needs_a_score_range_for_scores_and_scored_pairs_to_evaluate(tmp_path):
    raw = demo_config("enc", str(tmp_path))
    raw["tasks"].append({"name": "sts", "kind": "similarity", "train": {"path": "p.jsonl", "score_column": "s"}})
    with pytest.raises(ConfigError, match=r"tasks\.2\.train: .*score_range: required with score_column"):
        validate_config(raw)
    raw["tasks"][2] = {"name": "sts", "kind": "similarity", "train": {"path": "p.jsonl"},
                       "eval": {"path": "e.jsonl"}}
    with pytest.raises(ConfigError, match=r"tasks\.2: .*eval\.score_column"):
        validate_config(raw)
    raw["tasks"].pop()
    raw["embedding_eval"] = {"path": "e.jsonl"}
    with pytest.raises(ConfigError, match="embedding_eval.score_column"):
        validate_config(raw)
    raw["embedding_eval"] = {"path": "e.jsonl", "score_column": "s", "score_range": [5, 0]}
    with pytest.raises(ConfigError, match=r"score_range: \[5\.0, 0\.0\] is not \[low, high\]"):
        validate_config(raw)


def test_pair_features_scale_the_score_and_pad_each_sentence_apart(tiny_bundle):
    featurizer = tiny_bundle.featurizer
    rows = [{"text": "a b", "pair": "a much longer second sentence here", "score": 5.0},
            {"text": "one two three four five six", "pair": "x", "score": 1.0}]
    features = featurizer.similarity_features(rows, TaskSpec("sts", "similarity", ()), (0, 5))
    assert [feature["labels"] for feature in features] == [1.0, 0.2]
    batch = featurizer.collate(features)
    assert batch["input_ids"].shape[1] == len(features[1]["input_ids"])
    assert batch["pair_input_ids"].shape[1] == len(features[0]["pair_input_ids"])
    assert batch["pair_attention_mask"].sum().item() == sum(len(f["pair_input_ids"]) for f in features)
    assert batch["labels"].dtype == torch.float32


def test_cosent_counts_only_pairs_whose_cosines_are_out_of_the_gold_order():
    first = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    second = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])  # cosines 1, 0.71, 0
    in_order = cosent_loss(first, second, torch.tensor([5.0, 3.0, 0.0]))
    reversed_order = cosent_loss(first, second, torch.tensor([0.0, 3.0, 5.0]))
    assert in_order.item() < 0.01 and reversed_order.item() > 10  # log(1 + e^-5.9 + ...) vs about 20
    # ties in the gold scores ask for nothing: log(1 + 0) = 0
    assert cosent_loss(first, second, torch.tensor([2.0, 2.0, 2.0])).item() == pytest.approx(0.0)


def train_on_pairs(bundle, batch: dict, loss_of, steps: int = 15) -> list[float]:
    optimizer = torch.optim.AdamW(bundle.model.parameters(), lr=5e-3)
    bundle.model.train()
    losses = []
    for _ in range(steps):
        loss = loss_of(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_training_on_scored_pairs_and_on_triplets_lowers_their_losses(tiny_bundle, tiny_encoder_dir):
    texts = demo_texts()[:8]
    scored = [{"text": text, "pair": texts[(index + 1) % 8], "score": float(index % 5)}
              for index, text in enumerate(texts)]
    spec = TaskSpec("sts", "similarity", ())
    featurizer = tiny_bundle.featurizer
    batch = featurizer.collate(featurizer.similarity_features(scored, spec, (0, 5)))
    labels = batch.pop("labels")
    losses = train_on_pairs(tiny_bundle, batch, lambda inputs: tiny_bundle.model.similarity_loss(inputs, labels))
    assert losses[-1] < 0.5 * losses[0]
    torch.manual_seed(0)
    fresh = build_model(ModelConfig(encoder=str(tiny_encoder_dir), max_length=64), [spec])
    triplets = [{"text": text, "pair": text.lower(), "negative": texts[(index + 3) % 8]}
                for index, text in enumerate(texts)]
    batch = fresh.featurizer.collate(fresh.featurizer.similarity_features(triplets, spec, None))
    assert "negative_input_ids" in batch and "labels" not in batch
    losses = train_on_pairs(fresh, batch, fresh.model.similarity_loss)
    assert losses[-1] < 0.5 * losses[0]
    # the loss is in-batch negatives': cross-entropy over every candidate of the batch
    anchors, positives = torch.randn(4, 8), torch.randn(4, 8)
    assert in_batch_negatives_loss(anchors, anchors).item() < in_batch_negatives_loss(anchors, positives).item()


def test_similarity_eval_is_the_spearman_of_cosines_and_adds_up_across_shares(tiny_bundle, tmp_path):
    predictor = Predictor(tiny_bundle, device="cpu")
    rows = read_rows(DataSource(path=str(write_pairs(tmp_path / "pairs.jsonl", 30)), **SCORED), "similarity")
    whole = evaluate(predictor, {EMBEDDING_METRICS: rows})
    texts = [row[side] for row in rows for side in ("text", "pair")]
    embed = {text: prediction.embedding.astype(float) for text, prediction in zip(texts, predictor.embed(texts))}
    # rounded as the evaluation rounds them: a pair of a sentence with itself ties with the others
    cosines = [round(float(embed[row["text"]] @ embed[row["pair"]] /
                           (np.linalg.norm(embed[row["text"]]) * np.linalg.norm(embed[row["pair"]]))), 6)
               for row in rows]
    gold = [row["score"] for row in rows]
    assert whole["embedding"]["spearman"] == pytest.approx(stats.spearmanr(cosines, gold).statistic, abs=1e-6)
    assert whole["embedding"]["pearson"] == pytest.approx(stats.pearsonr(cosines, gold).statistic, abs=1e-6)
    assert whole["tasks"] == {} and whole["combined"] == 0.0  # the embedding's score is not a task's
    shares = [evaluation_counts(predictor, {EMBEDDING_METRICS: rows[rank::3]}) for rank in range(3)]
    assert reports_from_counts(add_counts(shares), predictor.task_specs)["embedding"]["spearman"] == \
        pytest.approx(whole["embedding"]["spearman"], abs=1e-12)


def test_reference_embeddings_are_the_pretrained_encoders_and_preservation_keeps_them(tiny_bundle, tiny_encoder_dir):
    settings = ModelConfig(encoder=str(tiny_encoder_dir), max_length=64)
    featurizer = tiny_bundle.featurizer
    rows = [{"text": text, "label": "positive"} for text in demo_texts()[:16]]
    spec = TaskSpec("sentiment", "classification", ("negative", "positive"))
    features = featurizer.classification_features(rows, spec)
    ReferenceEmbedder.pretrained(settings, featurizer, torch.device("cpu")).add_embeddings(features)
    tiny_bundle.model.eval()
    with torch.no_grad():
        own = tiny_bundle.model(**featurizer.encode(texts=[row["text"] for row in rows]).inputs, tasks=[]).embeddings
    np.testing.assert_allclose([feature[REFERENCE] for feature in features], own.numpy(), atol=1e-5)

    def drift(weight: float, kind: str) -> float:
        """How far 20 steps of the task move the embedding, by the preservation loss ``kind``."""
        torch.manual_seed(0)
        bundle = build_model(settings, [spec])
        batch = featurizer.collate(features)
        labels, reference = batch.pop("labels"), batch.pop(REFERENCE)

        def loss_of(inputs):
            output = bundle.model(**inputs, tasks=["sentiment"], labels={"sentiment": labels})
            return output.losses["sentiment"] + weight * preservation_loss(output.embeddings, reference, kind)

        train_on_pairs(bundle, batch, loss_of, steps=20)
        bundle.model.eval()
        with torch.no_grad():
            return preservation_loss(bundle.model(**batch, tasks=[]).embeddings, reference, kind).item()

    assert drift(10.0, "cosine") < 0.5 * drift(0.0, "cosine")
    assert drift(10.0, "similarities") < 0.5 * drift(0.0, "similarities")


def test_relational_preservation_asks_for_the_cosines_between_sentences_and_not_their_place():
    torch.manual_seed(0)
    reference = torch.randn(6, 8)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8))
    turned = reference @ rotation  # every cosine between two sentences as it was, every sentence moved
    assert preservation_loss(turned, reference, "similarities").item() == pytest.approx(0.0, abs=1e-6)
    assert preservation_loss(turned, reference, "cosine").item() > 0.1
    moved = reference.clone()
    moved[0] = -moved[0]  # the first sentence's cosine to each other one changes sign
    cosines = torch.nn.functional.normalize(reference, dim=-1) @ torch.nn.functional.normalize(reference, dim=-1).T
    expected = 2 * (2 * cosines[0, 1:]).pow(2).sum() / 36
    assert preservation_loss(moved, reference, "similarities").item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.fixture(scope="module")
def similarity_model_dir(tmp_path_factory, tiny_encoder_dir, demo_specs):
    torch.manual_seed(0)
    specs = [*demo_specs, TaskSpec("sts", "similarity", ())]
    bundle = build_model(ModelConfig(encoder=str(tiny_encoder_dir), max_length=16), specs)
    return save_model_folder(bundle, tmp_path_factory.mktemp("similarity") / "model")


def test_a_model_with_a_similarity_task_answers_its_other_tasks_and_embeddings(similarity_model_dir):
    loaded = load_model_folder(similarity_model_dir)
    assert [(spec.name, spec.kind) for spec in loaded.specs] == [
        ("sentiment", "classification"), ("ner", "tagging"), ("sts", "similarity")]
    assert set(loaded.model.heads) == {"sentiment", "ner"}
    predictor = Predictor.from_folder(similarity_model_dir, device="cpu")
    [answer] = predictor.predict(["Alice flew to Paris."])
    assert set(answer.labels) == {"sentiment"} and set(answer.entities) == {"ner"}
    assert answer.embedding.shape == (32,)
    with pytest.raises(ValueError, match=r"\['sts'\] trained the embedding .* ask for the embedding"):
        predictor.predict(["Alice"], tasks=["sts"])
    labeler = BatchLabeler(model=str(similarity_model_dir), text_column="text", tokens_column=None, tasks=None)
    table = labeler(pa.table({"text": ["Alice flew to Paris.", "fine"]}))
    assert "sts" not in table.column_names and {"embedding", "sentiment", "ner"} <= set(table.column_names)


def test_the_endpoint_lists_a_similarity_task_and_answers_only_the_others(similarity_model_dir):
    settings = ServiceSettings(model=str(similarity_model_dir))
    backend = PredictorBackend(Predictor.from_folder(similarity_model_dir, device="cpu"))
    client = TestClient(create_api(single_model(backend, model_info(str(similarity_model_dir))), settings))
    tasks = {task["name"]: task["kind"] for task in client.get("/v1/model").json()["tasks"]}
    assert tasks == {"sentiment": "classification", "ner": "tagging", "sts": "similarity"}
    result = client.post("/v1/predict", json={"texts": ["Bob works at Hooli"]}).json()["results"][0]
    assert set(result["labels"]) == {"sentiment"} and set(result["entities"]) == {"ner"}
    assert client.post("/v1/predict", json={"texts": ["Bob"], "tasks": ["sts"]}).status_code == 422
    assert len(client.post("/v1/embed", json={"texts": ["Bob"]}).json()["embeddings"][0]) == 32
