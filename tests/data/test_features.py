import pytest
import torch
from conftest import shared_data

from mtl.data.features import (
    IGNORE_INDEX,
    Featurizer,
    first_subword_labels,
    first_subword_positions,
    word_character_spans,
)
from mtl.data.readers import read_rows
from mtl.errors import DataError
from mtl.task_config import DataSource


def test_first_subword_gets_the_label_and_the_rest_are_ignored():
    word_ids = [None, 0, 1, 1, 1, 2, None]
    ignored = IGNORE_INDEX
    assert first_subword_labels(word_ids, [5, 3, 0]) == [ignored, 5, 3, ignored, ignored, 0, ignored]
    assert first_subword_positions(word_ids) == [1, 2, 5]


def test_tagging_features_align_tags_to_first_subwords(tiny_bundle, demo_specs):
    featurizer = tiny_bundle.featurizer
    row = {"tokens": ["EU", "rejects", "1996-08-22", "Paris"], "tags": ["B-ORG", "O", "O", "B-LOC"]}
    [feature] = featurizer.tagging_features([row], demo_specs[1])
    labeled = [label for label in feature["labels"] if label != IGNORE_INDEX]
    assert labeled == [demo_specs[1].label_id(tag) for tag in row["tags"]]
    assert len(feature["labels"]) == len(feature["input_ids"]) > 6  # the date splits into subwords


def test_truncation_drops_words_and_is_flagged(tiny_bundle):
    featurizer = tiny_bundle.featurizer
    long_text = " ".join(["word"] * 200)
    encoded = featurizer.encode(texts=[long_text, "short text"])
    assert encoded.truncated == [True, False]
    assert encoded.inputs["input_ids"].shape == (2, featurizer.max_length)
    assert encoded.inputs["attention_mask"][1].sum() == 4


def test_character_offsets_map_words_back_to_the_text(tiny_bundle):
    text = "Dana Lee flew to  Rio de Janeiro, again!"
    encoded = tiny_bundle.featurizer.encode(texts=[text])
    spans = word_character_spans(encoded.word_ids[0], encoded.offsets[0])
    assert [text[start:end] for start, end in spans] == \
        ["Dana", "Lee", "flew", "to", "Rio", "de", "Janeiro", ",", "again", "!"]


def test_collate_pads_ids_masks_and_labels(tiny_bundle):
    featurizer = tiny_bundle.featurizer
    rows = [{"input_ids": [101, 7, 102], "attention_mask": [1, 1, 1], "labels": [-100, 1, -100]},
            {"input_ids": [101, 102], "attention_mask": [1, 1], "labels": [-100, -100]}]
    batch = featurizer.collate(rows)
    assert batch["input_ids"].tolist() == [[101, 7, 102], [101, 102, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[-100, 1, -100], [-100, -100, -100]]
    assert featurizer.collate([{"input_ids": [1], "labels": 3}])["labels"].equal(torch.tensor([3]))


def test_unknown_eval_label_names_its_origin(tiny_bundle, demo_specs):
    rows = [{"text": "fine", "label": "neutral", "origin": "eval.jsonl:12"}]
    with pytest.raises(DataError, match=r"eval.jsonl:12: task 'sentiment': unknown label 'neutral'"):
        tiny_bundle.featurizer.classification_features(rows, demo_specs[0])


def test_exactly_one_of_texts_or_words(tiny_bundle):
    with pytest.raises(ValueError, match="either texts or words"):
        tiny_bundle.featurizer.tokenize()


@pytest.mark.real_data
def test_the_folder_featurizer_tokenizes_as_the_hugging_face_tokenizer_does(tiny_model_dir):
    """The ONNX backend's featurizer (tokenizer.json alone) against the tokenizer's own call, which
    this project tokenized with before: ids, mask, types, word ids, offsets and truncation."""
    from transformers import AutoTokenizer

    conll = read_rows(DataSource(path=str(shared_data("conll2003/valid.txt"))), "tagging")
    sst2 = [line.split("\t")[0] for line in shared_data("sst2/dev.tsv").read_text().splitlines()[1:]]
    texts = [*sst2, " ".join(["word"] * 40), "Dana  Lee\tflew to Rio, 1996-08-22!", "naïve café 😀 \u3000x"]
    words = [row["tokens"] for row in conll]
    hugging_face = AutoTokenizer.from_pretrained(tiny_model_dir)
    featurizer = Featurizer.from_folder(tiny_model_dir, max_length=16, input_names=["input_ids", "attention_mask",
                                                                                     "token_type_ids"])
    assert featurizer.pad_token_id == hugging_face.pad_token_id
    for items, pre_split in ((texts, False), (words, True)):
        expected = hugging_face(items, is_split_into_words=pre_split, truncation=True, max_length=16,
                                return_offsets_mapping=True)
        got = featurizer.featurize(words=items) if pre_split else featurizer.featurize(texts=items)
        for index, item in enumerate(got):
            assert item.inputs == {name: expected[name][index] for name in featurizer.input_names}
            assert item.word_ids == expected.word_ids(index)
            assert item.offsets == [tuple(pair) for pair in expected["offset_mapping"][index]]
            assert item.truncated == bool(expected.encodings[index].overflowing)
        assert sum(item.truncated for item in got) > 10  # truncation was exercised
