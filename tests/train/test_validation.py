"""Evaluation by shares: the counts of disjoint shares add up to exactly the metrics of the whole."""

from conftest import DEMO

from mtl.data.readers import read_rows
from mtl.inference.predictor import Predictor
from mtl.task_config import DataSource
from mtl.train.validation import add_counts, evaluate, evaluation_counts, reports_from_counts


def test_two_shares_score_exactly_what_one_evaluation_of_everything_scores(tiny_bundle):
    predictor = Predictor(tiny_bundle, device="cpu")
    rows = {"sentiment": read_rows(DataSource(path=str(DEMO / "eval.jsonl"), label_column="sentiment"),
                                   "classification"),
            "ner": read_rows(DataSource(path=str(DEMO / "eval.jsonl")), "tagging")}
    whole = evaluate(predictor, rows)
    shares = [evaluation_counts(predictor, {task: task_rows[rank::3] for task, task_rows in rows.items()})
              for rank in range(3)]
    combined = reports_from_counts(add_counts(shares), predictor.specs)
    assert combined == whole
    assert sum(sum(row) for row in combined["tasks"]["sentiment"]["confusion_matrix"]) == len(rows["sentiment"])
