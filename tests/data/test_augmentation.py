"""Training-time augmentation: EDA's word operations, entity substitution and case changes, each
label-preserving and reproducible from its seed."""

from collections import Counter

import numpy as np
import pytest

from mtl.data.augmentation import (
    Augmenter,
    change_case,
    delete_words,
    entities_by_type,
    insert_words,
    substitute_entities,
    swap_words,
)
from mtl.task_config import Augmentation
from mtl.tasks import bio_spans

WORDS = ["the", "film", "is", "a", "quiet", "and", "moving", "portrait", "of", "grief"]
TAGGED = [
    {"tokens": ["John", "Smith", "visited", "Paris", "."], "tags": ["B-PER", "I-PER", "O", "B-LOC", "O"]},
    {"tokens": ["Acme", "hired", "Mary", "in", "Berlin"], "tags": ["B-ORG", "O", "B-PER", "O", "B-LOC"]},
]


def generator(seed=0):
    return np.random.default_rng(seed)


def test_deletion_drops_words_in_order_and_always_leaves_one():
    kept = delete_words(WORDS, 0.5, generator())
    assert 0 < len(kept) < len(WORDS)
    assert kept == [word for word in WORDS if word in kept]  # the order is kept
    assert len(delete_words(["alone"], 0.99, generator())) == 1


def test_swap_keeps_the_words_and_moves_some():
    swapped = swap_words(WORDS, 0.3, generator())
    assert Counter(swapped) == Counter(WORDS) and swapped != WORDS


def test_insertion_adds_a_share_of_the_length_from_the_pool():
    inserted = insert_words(WORDS, 0.2, generator(), pool=["cinema"])
    assert len(inserted) == len(WORDS) + 2 and inserted.count("cinema") == 2
    assert [word for word in inserted if word != "cinema"] == WORDS


def test_entity_substitution_keeps_types_and_tags_consistent():
    entities = entities_by_type(TAGGED)
    assert entities == {"PER": [("John", "Smith"), ("Mary",)], "LOC": [("Paris",), ("Berlin",)], "ORG": [("Acme",)]}
    changed = [substitute_entities(TAGGED[0], entities, 1.0, generator(seed)) for seed in range(20)]
    for row in changed:
        assert len(row["tokens"]) == len(row["tags"])
        assert [kind for _, _, kind in bio_spans(row["tags"])] == ["PER", "LOC"]
        assert row["tokens"][-3:-1] in (["visited", "Paris"], ["visited", "Berlin"])
        spans = bio_spans(row["tags"])
        assert tuple(row["tokens"][spans[0][0]:spans[0][1]]) in entities["PER"]
    assert {tuple(row["tokens"]) for row in changed} > {tuple(TAGGED[0]["tokens"])}  # it did replace some
    assert substitute_entities(TAGGED[0], entities, 0.0, generator()) == TAGGED[0]


def test_case_change_leaves_the_tags():
    changed = change_case(TAGGED[0], 1.0, generator(1))
    assert changed["tags"] == TAGGED[0]["tags"]
    assert [token.lower() for token in changed["tokens"]] == [token.lower() for token in TAGGED[0]["tokens"]]
    assert changed["tokens"] != TAGGED[0]["tokens"]


def test_augmenter_changes_about_its_share_of_rows_the_same_way_for_the_same_seed():
    rows = [{"text": " ".join(WORDS[index:] + WORDS[:index]), "label": "positive", "origin": f"f:{index}"}
            for index in range(200)]
    augmenter = Augmenter(Augmentation(rows=0.5, deletion=0.2, swap=0.2, insertion=0.2), "classification")
    first, again, other = (augmenter.augment(rows, generator(seed)) for seed in (3, 3, 4))
    assert first == again and first != other
    changed = sum(row["text"] != original["text"] for row, original in zip(first, rows))
    assert 70 < changed <= 130
    assert all(row["label"] == "positive" and row["origin"] == original["origin"] for row, original in zip(first, rows))


def test_augmenter_of_a_tagging_task_keeps_every_row_aligned():
    augmenter = Augmenter(Augmentation(rows=1.0, entity_substitution=1.0, case=0.5), "tagging")
    for row in augmenter.augment(TAGGED * 20, generator()):
        assert len(row["tokens"]) == len(row["tags"])


def test_an_augmenter_needs_an_operation_of_its_task_kind():
    with pytest.raises(ValueError, match="no operation of a tagging task"):
        Augmenter(Augmentation(deletion=0.1), "tagging")
