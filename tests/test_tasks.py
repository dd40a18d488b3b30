import pytest

from mtl.errors import DataError
from mtl.tasks import TaskSpec, bio_spans, iob1_to_iob2, is_bio_tag


def test_tag_vocabulary_is_complete_and_stable():
    spec = TaskSpec.from_labels("ner", "tagging", ["O", "B-PER", "B-LOC", "I-LOC"])
    assert spec.labels == ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")


def test_class_vocabulary_is_sorted_strings():
    spec = TaskSpec.from_labels("s", "classification", ["1", "0", "1"])
    assert spec.labels == ("0", "1")
    assert spec.label_id("1") == 1


def test_unknown_label_names_origin_and_known_labels():
    spec = TaskSpec("s", "classification", ("neg", "pos"))
    with pytest.raises(DataError, match=r"dev.tsv:7: task 's': unknown label 'neutral'.*'neg', 'pos'"):
        spec.label_id("neutral", "dev.tsv:7")


def test_spec_round_trips_through_dict():
    spec = TaskSpec("ner", "tagging", ("O", "B-X", "I-X"))
    assert TaskSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("tag,ok", [("O", True), ("B-PER", True), ("I-creative-work", True),
                                    ("B-", False), ("PER", False), ("E-PER", False), ("", False)])
def test_is_bio_tag(tag, ok):
    assert is_bio_tag(tag) is ok


def test_iob1_to_iob2_marks_entity_starts():
    iob1 = ["I-ORG", "O", "I-MISC", "I-MISC", "B-MISC", "I-PER", "I-LOC"]
    assert iob1_to_iob2(iob1) == ["B-ORG", "O", "B-MISC", "I-MISC", "B-MISC", "B-PER", "B-LOC"]


def test_bio_spans_decodes_exclusive_ends_and_stray_inside_tags():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG", "I-ORG"]
    assert bio_spans(tags) == [(0, 2, "PER"), (3, 4, "LOC"), (4, 5, "LOC"), (5, 7, "ORG")]
    assert bio_spans(["O", "O"]) == []
    assert bio_spans(["B-X"]) == [(0, 1, "X")]
