import random

import pytest
from conftest import shared_data
from seqeval.metrics import f1_score, precision_score, recall_score
from sklearn.metrics import precision_recall_fscore_support

from mtl.data.readers import read_rows
from mtl.metrics import classification_report, confusion_matrix, entity_report
from mtl.task_config import DataSource

CONLL_SAMPLE = [
    ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"],
    ["B-PER", "I-PER"],
    ["B-LOC", "O"],
    ["O", "B-ORG", "I-ORG", "O", "O", "O", "O", "O", "O", "B-MISC", "I-MISC", "O"],
]


def perturb(sentences, seed, iob1=False):
    """Plausible model mistakes: wrong types, dropped and stray tags, I- without B-."""
    rng = random.Random(seed)
    types = ["PER", "ORG", "LOC", "MISC"]
    predicted = []
    for tags in sentences:
        new = []
        for tag in tags:
            roll = rng.random()
            if roll < 0.08:
                tag = "O"
            elif roll < 0.16:
                tag = f"{rng.choice('BI')}-{rng.choice(types)}"
            elif roll < 0.20 and tag.startswith("B-") and not iob1:
                tag = "I-" + tag[2:]
            new.append(tag)
        predicted.append(new)
    return predicted


def assert_matches_seqeval(gold, predicted, scored_gold=None, scored_predicted=None):
    report = entity_report(scored_gold or gold, scored_predicted or predicted)
    assert report["f1"] == pytest.approx(f1_score(gold, predicted))
    assert report["precision"] == pytest.approx(precision_score(gold, predicted))
    assert report["recall"] == pytest.approx(recall_score(gold, predicted))
    return report


def test_entity_f1_matches_seqeval_on_conll_style_sequences():
    report = assert_matches_seqeval(CONLL_SAMPLE, perturb(CONLL_SAMPLE, seed=1))
    assert 0 < report["f1"] < 1
    assert entity_report(CONLL_SAMPLE, CONLL_SAMPLE)["f1"] == 1.0


def test_entity_report_per_type_counts():
    report = entity_report([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-ORG"]])
    assert report["per_type"]["PER"]["f1"] == 1.0
    assert report["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["precision"] == pytest.approx(0.5)


@pytest.mark.real_data
def test_entity_f1_matches_seqeval_on_real_conll_iob2():
    gold = [row["tags"] for row in read_rows(DataSource(path=str(shared_data("conll2003/valid.txt"))), "tagging")]
    assert_matches_seqeval(gold, perturb(gold, seed=2))


@pytest.mark.real_data
def test_entity_f1_matches_seqeval_on_real_conll_iob1():
    """seqeval scores raw IOB1 tags; we convert to IOB2 on reading; the scores must agree."""
    path = shared_data("conll2003_iob1/eng.testa")
    raw = [row["tags"] for row in read_rows(DataSource(path=str(path), scheme="iob2"), "tagging")]
    predicted = perturb(raw, seed=3, iob1=True)
    converted = [row["tags"] for row in read_rows(DataSource(path=str(path), scheme="iob1"), "tagging")]
    from mtl.tasks import iob1_to_iob2
    assert_matches_seqeval(raw, predicted, converted, [iob1_to_iob2(tags) for tags in predicted])


def test_classification_report_matches_scikit_learn():
    rng = random.Random(0)
    labels = ["a", "b", "c", "d"]
    gold = [rng.choice(labels[:3]) for _ in range(200)]
    predicted = [label if rng.random() < 0.6 else rng.choice(labels) for label in gold]
    report = classification_report(gold, predicted, labels)
    precision, recall, f1, _ = precision_recall_fscore_support(gold, predicted, average="macro", zero_division=0)
    assert report["macro_precision"] == pytest.approx(precision)
    assert report["macro_recall"] == pytest.approx(recall)
    assert report["macro_f1"] == pytest.approx(f1)
    assert report["accuracy"] == pytest.approx(sum(g == p for g, p in zip(gold, predicted)) / 200)
    per_class = precision_recall_fscore_support(gold, predicted, labels=labels, zero_division=0)
    assert [report["per_class"][label]["f1"] for label in labels] == pytest.approx(list(per_class[2]))


def test_confusion_matrix_rows_are_gold():
    matrix = confusion_matrix(["x", "x", "y"], ["x", "y", "y"], ["x", "y"])
    assert matrix.tolist() == [[1, 1], [0, 1]]
