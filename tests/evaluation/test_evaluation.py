"""jobs.evaluate's library: bootstrap intervals, error analysis, robustness, reports, model cards."""

import json

import numpy as np
import pytest
from conftest import DEMO
from train_configs import write_pairs

from mtl.data.readers import read_rows
from mtl.errors import ConfigError
from mtl.evaluation.analysis import classify_entity_errors
from mtl.evaluation.intervals import bootstrap_cells, bootstrap_counts
from mtl.evaluation.outcomes import predict_outcomes
from mtl.evaluation.report import markdown_report, summary_table, write_report
from mtl.evaluation.robustness import perturb_rows
from mtl.evaluation.run import (
    EvalSet,
    EvaluationOptions,
    evaluate_model,
    evaluate_sets,
    local_scorer,
    model_task_specs,
    read_eval_set,
    source_from_fields,
    update_model_card,
)
from mtl.evaluation.scoring import task_metrics
from mtl.inference.predictor import Predictor
from mtl.task_config import DataSource
from mtl.tasks import TaskSpec, bio_spans

SENTIMENT = DataSource(path=str(DEMO / "eval.jsonl"), label_column="sentiment")
NER = DataSource(path=str(DEMO / "eval.jsonl"))


@pytest.fixture(scope="module")
def predictor(tiny_model_dir):
    return Predictor.from_folder(tiny_model_dir)


@pytest.fixture(scope="module")
def demo_sets(tiny_model_dir):
    specs = model_task_specs(str(tiny_model_dir))
    return {"sentiment": read_eval_set("sentiment", SENTIMENT, specs), "ner": read_eval_set("ner", NER, specs)}


def test_an_accuracy_interval_is_as_wide_as_the_binomial_one():
    # 400 examples, 320 right: the normal approximation gives 0.8 +- 1.96 * sqrt(0.8 * 0.2 / 400) = +- 0.039
    cells = np.array([0] * 320 + [1] * 80)   # cell 0: right, cell 1: wrong
    interval = bootstrap_cells(cells, 2, lambda counts: {"accuracy": counts[0] / counts.sum()},
                               resamples=2000, seed=1)["accuracy"]
    assert interval[0] == pytest.approx(0.8 - 0.039, abs=0.008)
    assert interval[1] == pytest.approx(0.8 + 0.039, abs=0.008)
    assert bootstrap_cells(cells, 2, lambda counts: {"a": counts[0] / counts.sum()}, resamples=200, seed=1) == \
        bootstrap_cells(cells, 2, lambda counts: {"a": counts[0] / counts.sum()}, resamples=200, seed=1)


def test_a_sum_interval_narrows_with_four_times_the_data():
    rng = np.random.default_rng(0)
    small, large = rng.integers(0, 2, (100, 1)), rng.integers(0, 2, (400, 1))

    def width(statistics):
        low, high = bootstrap_counts(statistics, lambda totals: {"mean": totals[0] / len(statistics)},
                                     resamples=500, seed=0)["mean"]
        return high - low

    assert width(large) == pytest.approx(width(small) / 2, rel=0.25)


def test_entity_errors_fall_in_one_bin_each():
    gold = [(0, 2, "PER"), (3, 4, "LOC"), (5, 6, "ORG"), (7, 8, "MISC"), (10, 12, "LOC")]
    predicted = [(0, 1, "PER"), (3, 4, "ORG"), (5, 7, "LOC"), (9, 10, "LOC"), (10, 12, "LOC")]
    errors = classify_entity_errors(gold, predicted)
    assert errors == [("boundary", (0, 2, "PER"), (0, 1, "PER")), ("type", (3, 4, "LOC"), (3, 4, "ORG")),
                      ("boundary_and_type", (5, 6, "ORG"), (5, 7, "LOC")), ("missed", (7, 8, "MISC"), None),
                      ("spurious", None, (9, 10, "LOC"))]


def _tags(spans, length):
    tags = ["O"] * length
    for start, end, kind in spans:
        tags[start:end] = [f"B-{kind}"] + [f"I-{kind}"] * (end - start - 1)
    return tags


def test_entity_scores_agree_with_seqeval(predictor, demo_sets):
    from seqeval.metrics import classification_report

    rows = demo_sets["ner"].rows
    outcomes = predict_outcomes(predictor, "ner", "tagging", rows)
    report = task_metrics(demo_sets["ner"].spec, rows, outcomes, resamples=0, seed=0)
    predicted = [_tags([tuple(entity[:3]) for entity in outcome["predicted"]], len(row["tags"]))
                 for row, outcome in zip(rows, outcomes)]
    reference = classification_report([row["tags"] for row in rows], predicted, output_dict=True, zero_division=0)
    assert sum(len(outcome["predicted"]) for outcome in outcomes) > 0   # the random model does predict entities
    for kind, scores in report["per_type"].items():
        if scores["support"]:
            for metric in ("precision", "recall", "f1"):
                assert scores[metric] == pytest.approx(reference[kind][f"{metric}-score" if metric == "f1"
                                                                       else metric], abs=1e-9)
    assert report["f1"] == pytest.approx(reference["micro avg"]["f1-score"], abs=1e-9)


def test_class_scores_agree_with_scikit_learn(predictor, demo_sets):
    from sklearn.metrics import accuracy_score, f1_score

    rows = demo_sets["sentiment"].rows
    outcomes = predict_outcomes(predictor, "sentiment", "classification", rows)
    report = task_metrics(demo_sets["sentiment"].spec, rows, outcomes, resamples=100, seed=0)
    gold, predicted = [row["label"] for row in rows], [outcome["predicted"] for outcome in outcomes]
    assert report["accuracy"] == pytest.approx(accuracy_score(gold, predicted))
    assert report["macro_f1"] == pytest.approx(f1_score(gold, predicted, average="macro", labels=sorted(set(gold))))
    assert report["accuracy_ci"][0] <= report["accuracy"] <= report["accuracy_ci"][1]
    assert set(report["per_class"]["positive"]) >= {"f1_ci", "precision_ci", "recall_ci"}


def test_perturbations_keep_one_tag_per_token_and_are_deterministic():
    rows = read_rows(NER, "tagging")
    for perturbation in ("typos", "lowercase", "punctuation"):
        perturbed = perturb_rows(rows, "tagging", perturbation, seed=3)
        assert perturbed == perturb_rows(rows, "tagging", perturbation, seed=3)
        assert all(len(row["tokens"]) == len(row["tags"]) for row in perturbed)
        assert [bio_spans(row["tags"]) != [] for row in perturbed] == [bio_spans(row["tags"]) != [] for row in rows]
    no_punctuation = perturb_rows(rows, "tagging", "punctuation", seed=3)
    assert "." not in {token for row in no_punctuation for token in row["tokens"]}
    assert sum(len(row["tokens"]) for row in no_punctuation) < sum(len(row["tokens"]) for row in rows)
    typos = perturb_rows(rows, "tagging", "typos", seed=3)
    long_words = [(a, b) for row, new in zip(rows, typos) for a, b in zip(row["tokens"], new["tokens"])
                  if len(a) >= 4 and a.isalpha()]
    assert 0.04 < sum(a != b for a, b in long_words) / len(long_words) < 0.2
    texts = perturb_rows(read_rows(SENTIMENT, "classification"), "classification", "lowercase", seed=0)
    assert all(row["text"] == row["text"].lower() for row in texts)


def test_a_report_has_intervals_errors_and_robustness_for_every_task(predictor, demo_sets, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    sets = {**demo_sets, "embedding": read_eval_set("embedding", DataSource(path=str(pairs), score_column="score",
                                                                           score_range=(0, 5)), {})}
    report = evaluate_sets(sets, local_scorer(predictor), EvaluationOptions(resamples=100, seed=0, shown=3))
    assert set(report["tasks"]) == {"sentiment", "ner"} and report["embedding"]["kind"] == "similarity"
    assert report["combined"] == pytest.approx((report["tasks"]["sentiment"]["accuracy"]
                                                + report["tasks"]["ner"]["f1"]) / 2)
    for task_report in [*report["tasks"].values(), report["embedding"]]:
        low, high = task_report["primary_ci"]
        assert low <= task_report["primary"] <= high
        assert set(task_report["robustness"]) == {"typos", "lowercase", "punctuation"}
        for values in task_report["robustness"].values():
            assert values["drop"] == pytest.approx(task_report["primary"] - values["primary"])
    assert len(report["tasks"]["sentiment"]["errors"]["confident_mistakes"]) <= 3
    assert sum(report["tasks"]["ner"]["errors"]["entity_errors"].values()) > 0
    assert len(report["embedding"]["errors"]["largest_disagreements"]) == 3
    files = write_report(report, str(tmp_path / "out"))
    names = {path.rsplit("/", 1)[-1] for path in files}
    assert {"report.json", "report.md", "confusion_sentiment.png", "f1_ner.png", "robustness.png"} <= names
    assert json.loads((tmp_path / "out" / "report.json").read_text())["combined"] == report["combined"]
    assert "## ner (tagging" in markdown_report(report)
    assert summary_table(report).splitlines()[0].split()[:2] == ["task", "metric"]


def test_a_second_run_with_the_same_seed_reports_the_same(predictor, demo_sets):
    options = EvaluationOptions(resamples=50, seed=7, perturbations=("typos",))
    first = evaluate_sets(demo_sets, local_scorer(predictor), options)
    assert evaluate_sets(demo_sets, local_scorer(predictor), options) == first


def test_every_model_folder_has_a_model_card_in_hugging_face_format(tiny_model_dir):
    from huggingface_hub import ModelCard

    card = ModelCard.load(tiny_model_dir / "README.md")
    assert card.data.library_name == "sentence-transformers"
    assert {"text-classification", "token-classification"} <= set(card.data.tags)
    assert "## Tasks and labels" in card.text and "`B-PER`" in card.text
    assert "## Bias and ethical considerations" in card.text and "SentenceTransformer(" in card.text


def test_update_card_puts_intervals_in_the_card_and_no_texts_in_the_folder(tiny_model_dir, demo_sets, tmp_path):
    import shutil

    from huggingface_hub import ModelCard

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    predictor = Predictor.from_folder(folder)
    report = evaluate_model(str(folder), demo_sets, local_scorer(predictor), EvaluationOptions(resamples=100))
    update_model_card(str(folder), report)
    card = ModelCard.load(folder / "README.md")
    results = {(result.task_name, result.metric_type): result.metric_value for result in card.data.eval_results}
    assert results[("sentiment", "accuracy")] == round(report["tasks"]["sentiment"]["accuracy"], 4)
    low, high = report["tasks"]["ner"]["f1_ci"]
    assert f"[{low:.4f}, {high:.4f}]" in card.text
    stored = json.loads((folder / "evaluation.json").read_text())
    assert "errors" not in stored["tasks"]["sentiment"] and stored["model"]["version"] == report["model"]["version"]


def test_a_data_source_from_the_command_line_is_checked_field_by_field():
    source = source_from_fields("x.tsv", ["format=tsv", "header=false", "text_column=1", "score_range=[0, 5]",
                                          "score_column=0"])
    assert source.text_column == 1 and source.score_range == (0, 5) and source.header is False
    with pytest.raises(ConfigError, match="colour"):
        source_from_fields("x.tsv", ["colour=red"])
    with pytest.raises(ConfigError, match="score_range"):
        source_from_fields("x.tsv", ["score_column=0"])


def test_a_task_the_model_does_not_have_is_named(tiny_model_dir):
    with pytest.raises(ConfigError, match="'topic'.*has \\['sentiment', 'ner'\\]"):
        read_eval_set("topic", SENTIMENT, model_task_specs(str(tiny_model_dir)))


def test_an_unseen_gold_label_is_an_error_naming_its_line(predictor, tmp_path):
    data = tmp_path / "eval.jsonl"
    data.write_text('{"text": "fine", "sentiment": "positive"}\n{"text": "meh", "sentiment": "neutral"}\n')
    rows = read_rows(DataSource(path=str(data), label_column="sentiment"), "classification")
    spec = TaskSpec("sentiment", "classification", ("negative", "positive"))
    with pytest.raises(ValueError, match=r"eval.jsonl:2.*'neutral'"):
        evaluate_sets({"sentiment": EvalSet(spec, rows, str(data))}, local_scorer(predictor),
                      EvaluationOptions(resamples=0, perturbations=()))
