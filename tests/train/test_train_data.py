"""Training data on Ray Data: the counting pass (label maps, caps, errors that name the field, file
and line) and each worker's stream (its own share, the same batches on every run, resumable)."""

import json
import time

import numpy as np
import pytest
import torch
from conftest import DEMO
from train_configs import demo_config, write_pairs
from transformers import AutoTokenizer

import mtl.train.stream
from mtl.config import ModelConfig, validate_config
from mtl.data.features import Featurizer
from mtl.errors import ConfigError, DataError
from mtl.train.data_plan import plan_training_data
from mtl.train.preservation import REFERENCE, ReferenceEmbedder
from mtl.train.stream import TaskStream, file_runs

pytestmark = pytest.mark.ray


@pytest.fixture
def raw(tiny_encoder_dir, tmp_path):
    return demo_config(str(tiny_encoder_dir), str(tmp_path / "run"))


def test_the_counting_pass_builds_label_maps_and_caps_each_task(ray_local, raw):
    specs, plans = plan_training_data(validate_config(raw))
    assert [spec.name for spec in specs] == ["sentiment", "ner"]
    assert specs[0].labels == ("negative", "positive")
    assert {name: plan.rows for name, plan in plans.items()} == {"sentiment": 64, "ner": 64}
    assert plans["ner"].file_rows == [400] and len(plans["ner"].keep) == 64


def stream(plans, specs, raw, *, rank=0, world_size=1, draws=0, batch_size=16, keep_in_memory_rows=0,
           task=1, preserve=False):
    featurizer = Featurizer(tokenizer=AutoTokenizer.from_pretrained(raw["model"]["encoder"]), max_length=32)
    reference = ReferenceEmbedder.pretrained(ModelConfig.model_validate(raw["model"]), featurizer,
                                             torch.device("cpu")) if preserve else None
    return TaskStream(plans[specs[task].name], specs[task], featurizer=featurizer, batch_size=batch_size, seed=7,
                      task_index=task, rank=rank, world_size=world_size, draws=draws,
                      keep_in_memory_rows=keep_in_memory_rows, reference=reference)


def identities(batch) -> list[tuple]:
    return [tuple(row["input_ids"]) + tuple(row["labels"]) for row in batch]


def test_ranks_get_equal_disjoint_shares_and_a_resumed_stream_gives_the_same_batches(ray_local, raw):
    raw["train"]["max_examples_per_task"] = 60
    specs, plans = plan_training_data(validate_config(raw))
    shares = [stream(plans, specs, raw, rank=rank, world_size=2) for rank in range(2)]
    assert [share.batches_per_pass for share in shares] == [2, 2]  # 30 rows each, batches of 16
    first_pass = [[row for _ in range(2) for row in identities(share.next_batch())] for share in shares]
    assert [len(rows) for rows in first_pass] == [30, 30]
    whole = stream(plans, specs, raw)
    everything = [row for _ in range(4) for row in identities(whole.next_batch())]
    assert sorted(first_pass[0] + first_pass[1]) == sorted(everything)
    # pass two of rank 0, fresh or resumed after three batches
    fresh = stream(plans, specs, raw, rank=0, world_size=2)
    batches = [identities(fresh.next_batch()) for _ in range(4)]
    resumed = stream(plans, specs, raw, rank=0, world_size=2, draws=3)
    assert identities(resumed.next_batch()) == batches[3]
    assert batches[2] != batches[0], "the second pass should be shuffled differently"


def test_a_share_kept_in_memory_gives_the_batches_a_streamed_one_gives(ray_local, raw, tmp_path):
    lines = (DEMO / "train.jsonl").read_text().splitlines()
    folder = tmp_path / "shards"
    folder.mkdir()
    for number in range(3):  # several files: each pass reads them in an order of its own
        (folder / f"part-{number}.jsonl").write_text("\n".join(lines[number * 40:(number + 1) * 40]) + "\n")
    raw["tasks"][1]["train"]["path"] = str(folder)
    raw["train"]["max_examples_per_task"] = 100
    specs, plans = plan_training_data(validate_config(raw))
    batches = 3 * 4  # three passes of 50 rows (rank 1 of 2) in batches of 16
    # with embedding preservation, as the shipped configs train: every row carries its reference embedding
    streamed = stream(plans, specs, raw, rank=1, world_size=2, preserve=True)
    kept = stream(plans, specs, raw, rank=1, world_size=2, keep_in_memory_rows=50, preserve=True)
    assert kept.in_memory and not streamed.in_memory
    streamed_batches = [streamed.next_batch() for _ in range(batches)]
    kept_batches = [kept.next_batch() for _ in range(batches)]
    expected = [identities(batch) for batch in streamed_batches]
    assert [identities(batch) for batch in kept_batches] == expected
    # the kept copy holds them in float16: close to the embeddings made again on each streamed pass
    references = [np.array([row[REFERENCE] for batch in run for row in batch]) for run in (streamed_batches,
                                                                                           kept_batches)]
    assert references[0].shape == (batches * 16 - 3 * 14, 32)
    np.testing.assert_allclose(references[1], references[0], atol=2e-3)
    np.testing.assert_allclose(np.linalg.norm(references[0], axis=1), 1.0, atol=1e-5)
    resumed = stream(plans, specs, raw, rank=1, world_size=2, draws=5, keep_in_memory_rows=50)
    assert [identities(resumed.next_batch()) for _ in range(batches - 5)] == expected[5:]


def test_a_similarity_task_is_counted_and_streamed_as_pairs_with_scaled_scores(ray_local, raw, tmp_path):
    pairs = {"path": str(write_pairs(tmp_path / "pairs.jsonl", 40)), "score_column": "score", "score_range": [0, 5]}
    raw["tasks"].append({"name": "sts", "kind": "similarity", "train": pairs, "eval": pairs})
    specs, plans = plan_training_data(validate_config(raw))
    assert specs[2].labels == () and plans["sts"].rows == 40
    batch = stream(plans, specs, raw, task=2, preserve=True).next_batch()
    assert len(batch) == 16 and all(0 <= row["labels"] <= 1 for row in batch)
    assert all(row["pair_input_ids"][0] == row["input_ids"][0] for row in batch)  # both start with [CLS]
    assert not any(REFERENCE in row for row in batch)  # a similarity task trains the embedding itself


def test_a_pass_reads_its_files_a_run_at_a_time_and_gives_the_batches_of_one_read(
        ray_local, raw, tmp_path, monkeypatch):
    lines = (DEMO / "train.jsonl").read_text().splitlines()
    folder = tmp_path / "shards"
    folder.mkdir()
    for number in range(2):
        (folder / f"part-{number}.jsonl").write_text("\n".join(lines[number * 100:(number + 1) * 100]) + "\n")
    raw["tasks"][1]["train"]["path"] = str(folder)
    raw["train"]["max_examples_per_task"] = 200
    specs, plans = plan_training_data(validate_config(raw))
    monkeypatch.setattr(mtl.train.stream, "WINDOW_ROWS", 16)  # windows of one batch: a few are read ahead
    one_read = stream(plans, specs, raw)
    expected = [identities(one_read.next_batch()) for _ in range(13)]  # a pass: 200 rows in batches of 16
    runs = []
    run_dataset = TaskStream._run_dataset
    # the first stream's reader may run on into its next pass meanwhile: its reads are not counted
    monkeypatch.setattr(TaskStream, "_run_dataset",
                        lambda self, source, files: (self is not one_read and runs.append(files))
                        or run_dataset(self, source, files))
    monkeypatch.setattr(mtl.train.stream, "RUN_ROWS", 100)
    share = stream(plans, specs, raw)
    batches = [identities(share.next_batch())]
    time.sleep(2)  # the reader thread fills what it may hold ahead
    assert len(runs) == 1, "the second file was read while the first was still being taken"
    batches += [identities(share.next_batch()) for _ in range(12)]
    assert sorted(runs[:2]) == [[0], [1]]  # then the next pass's first run may start
    assert batches == expected


def test_file_runs_group_files_in_order_until_they_hold_enough_rows():
    assert list(file_runs(np.array([2, 0, 1, 3]), [10, 50, 30, 5], 40)) == [[2, 0], [1], [3]]
    assert list(file_runs(np.array([1, 0]), [10, 100], 40)) == [[1], [0]]


def test_a_wrong_path_names_the_field(ray_local, raw):
    raw["tasks"][1]["train"]["path"] = "nowhere/train.jsonl"
    with pytest.raises(DataError, match=r"config error: tasks\.1\.train: nowhere/train.jsonl: no such file"):
        plan_training_data(validate_config(raw))


def test_a_bad_training_row_names_field_file_and_line(ray_local, raw, tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"text": "fine", "sentiment": "positive"}) + "\n" + json.dumps({"text": "x"}) + "\n")
    raw["tasks"][0]["train"]["path"] = str(path)
    with pytest.raises(DataError, match=r"config error: tasks\.0\.train: .*train.jsonl:2: no label_column 'sentiment'"):
        plan_training_data(validate_config(raw))


def test_unknown_column_in_eval_data_names_field_file_and_line(ray_local, raw):
    raw["tasks"][0]["eval"]["label_column"] = "stars"
    with pytest.raises(DataError, match=r"config error: tasks\.0\.eval: .*eval.jsonl:1: no label_column 'stars'"):
        plan_training_data(validate_config(raw))


def test_eval_label_never_seen_in_training_names_field_and_line(ray_local, raw, tmp_path):
    rows = [{"text": "fine", "sentiment": "positive"}, {"text": "meh", "sentiment": "neutral"}]
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    raw["tasks"][0]["eval"]["path"] = str(path)
    with pytest.raises(DataError, match=r"tasks\.0\.eval: .*eval.jsonl:2: task 'sentiment': unknown label 'neutral'"):
        plan_training_data(validate_config(raw))


def test_eval_tag_of_an_unseen_entity_type_is_an_error(ray_local, raw, tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps({"tokens": ["Bob", "Inc"], "tags": ["B-PER", "B-COMPANY"]}) + "\n")
    raw["tasks"][1]["eval"]["path"] = str(path)
    with pytest.raises(DataError, match=r"tasks\.1\.eval: .*unknown label 'B-COMPANY'"):
        plan_training_data(validate_config(raw))


def test_unknown_task_kind_and_train_key_are_config_errors(raw):
    raw["tasks"][0]["kind"] = "regression"
    with pytest.raises(ConfigError, match=r"tasks\.0\.kind"):
        validate_config(raw)
    raw["tasks"][0]["kind"] = "classification"
    raw["train"]["epoch"] = 3
    with pytest.raises(ConfigError, match=r"train\.epoch: Extra inputs are not permitted"):
        validate_config(raw)


def test_an_augmented_task_is_augmented_anew_each_pass_and_alike_on_every_run(ray_local, raw):
    from mtl.task_config import Augmentation

    specs, plans = plan_training_data(validate_config(raw))
    augment = Augmentation(rows=1.0, deletion=0.3)

    def sentiment_stream(augment):
        featurizer = Featurizer(tokenizer=AutoTokenizer.from_pretrained(raw["model"]["encoder"]), max_length=32)
        return TaskStream(plans["sentiment"], specs[0], featurizer=featurizer, batch_size=16, seed=7, task_index=0,
                          rank=0, world_size=1, keep_in_memory_rows=10_000, augment=augment)

    def passes(stream, count=2):
        return [sorted(tuple(row["input_ids"]) for _ in range(4) for row in stream.next_batch()) for _ in range(count)]

    plain, augmented, again = sentiment_stream(None), sentiment_stream(augment), sentiment_stream(augment)
    assert plain.in_memory and not augmented.in_memory  # each pass must be augmented anew
    plain_passes, augmented_passes = passes(plain), passes(augmented)
    assert plain_passes[0] == plain_passes[1]
    assert augmented_passes[0] != augmented_passes[1]
    assert all(len(augmented_row) < len(plain_row) for augmented_row, plain_row in  # words were deleted
               zip(sorted(augmented_passes[0], key=len), sorted(plain_passes[0], key=len)))
    assert passes(again) == augmented_passes


def test_a_second_source_joins_the_tasks_rows_numbered_after_its_own_and_uncapped(ray_local, raw, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mtl.task_config import DataSource

    texts = [f"a neutral remark number {number}" for number in range(24)]
    pq.write_table(pa.table({"text": texts, "sentiment": ["neutral"] * 23 + [None]}), tmp_path / "extra.parquet")
    extra = DataSource(path=str(tmp_path / "*.parquet"), text_column="text", label_column="sentiment",
                       skip_unlabeled=True)
    specs, plans = plan_training_data(validate_config(raw), {"sentiment": {"distill.corpus": extra}})
    assert specs[0].labels == ("negative", "neutral", "positive")
    assert plans["sentiment"].file_rows == [400, 23] and plans["sentiment"].file_sources == [0, 1]
    # max_examples_per_task (64) samples the task's own rows; the second source's all come too
    assert plans["sentiment"].rows == 64 + 23 and plans["ner"].rows == 64
    whole = stream(plans, specs, raw, task=0, batch_size=29)
    rows = [row for _ in range(whole.batches_per_pass) for row in whole.next_batch()]
    neutral = specs[0].label_id("neutral", "test")
    assert len(rows) == 87 and sum(row["labels"] == neutral for row in rows) == 23
    with pytest.raises(DataError, match=r"config error: distill.corpus: .*extra.parquet:row 24: label_column"):
        plan_training_data(validate_config(raw), {"sentiment": {"distill.corpus": extra.model_copy(
            update={"skip_unlabeled": False})}})
