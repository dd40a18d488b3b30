import json

import pytest
from train_configs import demo_config

from mtl.config import validate_config
from mtl.errors import ConfigError, DataError
from mtl.train.prepare import prepare_data


@pytest.fixture
def raw(tiny_encoder_dir, tmp_path):
    return demo_config(str(tiny_encoder_dir), str(tmp_path / "run"))


def test_prepare_builds_specs_and_caps_examples(raw):
    prepared = prepare_data(validate_config(raw))
    assert [spec.name for spec in prepared.specs] == ["sentiment", "ner"]
    assert prepared.specs[0].labels == ("negative", "positive")
    assert {task: len(features) for task, features in prepared.train_features.items()} == {"sentiment": 64, "ner": 64}
    assert all(len(f["input_ids"]) <= 32 for f in prepared.train_features["ner"])


def test_wrong_path_names_the_field(raw):
    raw["tasks"][1]["train"]["path"] = "nowhere/train.jsonl"
    with pytest.raises(DataError, match=r"config error: tasks\.1\.train: nowhere/train.jsonl: no such file"):
        prepare_data(validate_config(raw))


def test_unknown_column_names_field_file_and_line(raw):
    raw["tasks"][0]["eval"]["label_column"] = "stars"
    with pytest.raises(DataError, match=r"config error: tasks\.0\.eval: .*eval.jsonl:1: no label_column 'stars'"):
        prepare_data(validate_config(raw))


def test_unknown_task_kind_is_a_config_error(raw):
    raw["tasks"][0]["kind"] = "regression"
    with pytest.raises(ConfigError, match=r"tasks\.0\.kind"):
        validate_config(raw)


def test_unknown_train_key_is_a_config_error(raw):
    raw["train"]["epoch"] = 3
    with pytest.raises(ConfigError, match=r"train\.epoch: Extra inputs are not permitted"):
        validate_config(raw)


def test_eval_label_never_seen_in_training_names_field_and_line(raw, tmp_path):
    rows = [{"text": "fine", "sentiment": "positive"}, {"text": "meh", "sentiment": "neutral"}]
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    raw["tasks"][0]["eval"]["path"] = str(path)
    with pytest.raises(DataError, match=r"tasks\.0\.eval: .*eval.jsonl:2: task 'sentiment': unknown label 'neutral'"):
        prepare_data(validate_config(raw))


def test_eval_tag_of_an_unseen_entity_type_is_an_error(raw, tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps({"tokens": ["Bob", "Inc"], "tags": ["B-PER", "B-COMPANY"]}) + "\n")
    raw["tasks"][1]["eval"]["path"] = str(path)
    with pytest.raises(DataError, match=r"tasks\.1\.eval: .*unknown label 'B-COMPANY'"):
        prepare_data(validate_config(raw))
