"""Bulk-labeling pieces without Ray: Arrow columns, the batch labeler, input expansion, actor plans."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs
import pyarrow.parquet
import pyarrow.parquet as pq
import pytest
from conftest import dictionary_encoded_columns

from mtl.inference.model_folder import save_model_folder
from mtl.labeling.actors import plan_actors
from mtl.labeling.columns import PARQUET_OPTIONS, BatchLabeler, output_columns
from mtl.labeling.corpus import estimate_row_bytes, expand_input, input_format
from mtl.labeling.options import LabelOptions, batch_rows, check_output_reachable


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_encoder_dir, demo_specs):
    import torch

    from mtl.config import ModelConfig
    from mtl.inference.model_folder import build_model

    torch.manual_seed(0)
    bundle = build_model(ModelConfig(encoder=str(tiny_encoder_dir), max_length=16), demo_specs)
    return save_model_folder(bundle, tmp_path_factory.mktemp("label") / "model")


def labeler(model_dir, **options):
    arguments = {"text_column": "text", "tokens_column": None, "tasks": None, **options}
    return BatchLabeler(model=str(model_dir), **arguments)


BAD_AND_GOOD = ["Alice flew to Paris.", None, "", "   ", "word " * 40, "Bob"]


def test_every_row_comes_back_once_with_errors_on_bad_rows(model_dir):
    table = pa.table({"id": list(range(6)), "text": BAD_AND_GOOD})
    out = labeler(model_dir, model_batch_size=2)(table)
    assert out.num_rows == 6
    assert out.column("id").to_pylist() == list(range(6))
    assert out.column_names == ["id", "text", *output_columns(list(labeler(model_dir).specs), True)]
    errors = out.column("error").to_pylist()
    assert [error is None for error in errors] == [True, False, False, False, True, True]
    assert errors[1] == "text is null" and errors[2] == "text is empty"
    assert out.column("truncated").to_pylist()[4] is True
    for name in ("embedding", "sentiment", "sentiment_score", "ner", "truncated"):
        assert out.column(name).to_pylist()[1] is None


def test_embedding_is_a_float_list_of_one_length_readable_as_numpy(model_dir, tmp_path):
    out = labeler(model_dir)(pa.table({"text": ["one", None, "two"]}))
    assert out.schema.field("embedding").type == pa.list_(pa.float32())
    matrix = np.stack(out.column("embedding").drop_null().to_numpy(zero_copy_only=False))
    assert matrix.shape == (2, 32)
    half = labeler(model_dir, embedding_dtype="float16")(pa.table({"text": ["one"]}))
    assert half.schema.field("embedding").type == pa.list_(pa.float16())
    # a null embedding (a bad row) reads back from Parquet with every pyarrow this project meets
    pq.write_table(out, tmp_path / "out.parquet", **PARQUET_OPTIONS)
    back = pads.dataset(str(tmp_path / "out.parquet"), format="parquet").to_table().column("embedding")
    assert back.null_count == 1 and [len(vector) for vector in back.drop_null().to_pylist()] == [32, 32]
    assert back.to_pylist() == out.column("embedding").to_pylist()


def test_parquet_output_stores_nothing_as_a_dictionary_and_reads_back_as_labeled(model_dir, tmp_path):
    for dtype in ("float32", "float16"):
        out = labeler(model_dir, embedding_dtype=dtype)(pa.table({"text": ["one", "two", None]}))
        pq.write_table(out, tmp_path / f"{dtype}.parquet", **PARQUET_OPTIONS)
        assert dictionary_encoded_columns(tmp_path / f"{dtype}.parquet") == []
        assert pq.read_table(tmp_path / f"{dtype}.parquet").equals(out)


def test_task_subset_and_no_embedding(model_dir):
    out = labeler(model_dir, tasks=["ner"], embedding=False)(pa.table({"text": ["Dana Lee"]}))
    assert out.column_names == ["text", "ner", "truncated", "error"]
    entity_type = out.schema.field("ner").type.value_type
    names = [entity_type.field(i).name for i in range(entity_type.num_fields)]
    assert names == ["start", "end", "label", "text", "score"]


def test_binary_text_is_an_error_row(model_dir):
    out = labeler(model_dir)(pa.table({"text": pa.array([b"\x00\xff", b"ok"], pa.binary())}))
    assert out.column("error").to_pylist() == ["text must be a string, got bytes"] * 2


def test_pre_split_tokens_are_tagged_by_token_index(model_dir):
    out = labeler(model_dir, text_column=None, tokens_column="tokens")(
        pa.table({"tokens": [["New", "York"], []]}))
    spans = out.column("ner").to_pylist()[0]
    assert all(0 <= span["start"] < span["end"] <= 2 for span in spans)
    assert out.column("error").to_pylist() == [None, "tokens is empty"]


def test_json_lines_survive_bad_lines_and_type_changes(model_dir):
    lines = [json.dumps({"text": "fine", "id": 1}), json.dumps({"text": 5, "id": 2}), "{not json",
             json.dumps({"id": 4}), json.dumps(["a", "list"])]
    out = labeler(model_dir, json_lines=True)(pa.table({"text": lines}))
    assert out.num_rows == 5
    assert out.column("text").to_pylist()[:2] == ["fine", "5"]
    assert out.column("error").to_pylist() == [None, "text must be a string, got int",
                                               "no column 'text' in this row", "no column 'text' in this row",
                                               "no column 'text' in this row"]
    assert out.column("_raw_line").to_pylist()[2] == "{not json"


def test_expand_input_file_folder_and_glob(tmp_path):
    for name in ("a.txt", "b.txt", "sub/c.txt", "_hidden.txt", "d.csv"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x\n")
    assert expand_input(str(tmp_path / "a.txt"))[0] == [str(tmp_path / "a.txt")]
    assert len(expand_input(str(tmp_path))[0]) == 4
    assert [p.rsplit("/", 1)[1] for p in expand_input(str(tmp_path / "*.txt"))[0]] == ["a.txt", "b.txt"]
    with pytest.raises(FileNotFoundError, match="no files match"):
        expand_input(str(tmp_path / "*.parquet"))
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        expand_input(str(tmp_path / "missing.txt"))


def test_input_format_from_suffixes():
    assert input_format(["a.jsonl", "b.jsonl"], None) == "jsonl"
    assert input_format(["a.bin"], "parquet") == "parquet"
    with pytest.raises(ValueError, match="pass --format"):
        input_format(["a.csv", "b.txt"], None)


def options(**overrides) -> LabelOptions:
    return LabelOptions(model="m", input="i", output="o", **overrides)


def test_cpu_cluster_gets_a_one_thread_actor_per_core_with_room_left_for_io():
    plan = plan_actors(options(), node_cpus=[2.0], cluster_gpus=0)
    assert (plan.min_actors, plan.max_actors, plan.threads, plan.gpus) == (2, 2, 1, 0)
    assert plan.cpus * 2 + 1 + 2 * 0.25 <= 2.0  # two actors, the repartition, a reader and a writer fit
    big = plan_actors(options(), node_cpus=[16.0, 16.0], cluster_gpus=0)
    assert (big.max_actors, big.threads) == (32, 1) and 0 < big.cpus <= 1


def test_fewer_actors_than_cores_share_the_cores_out_as_threads():
    plan = plan_actors(options(max_actors=2), node_cpus=[8.0], cluster_gpus=0)
    assert (plan.max_actors, plan.threads, plan.cpus) == (2, 4, 1.0)


def test_gpu_cluster_gets_an_actor_per_gpu_and_an_autoscaling_pool_its_bounds():
    plan = plan_actors(options(), node_cpus=[8.0, 8.0], cluster_gpus=4)
    assert (plan.max_actors, plan.gpus, plan.cpus, plan.threads) == (4, 1, 1.0, None)
    scaling = plan_actors(options(min_actors=1, max_actors=4), node_cpus=[8.0], cluster_gpus=4)
    assert (scaling.min_actors, scaling.max_actors) == (1, 4)
    pinned = plan_actors(options(cpus_per_actor=3, threads_per_actor=2, use_gpu=False), [8.0], 4)
    assert (pinned.cpus, pinned.threads, pinned.gpus) == (3, 2, 0)


def test_wide_rows_make_smaller_batches(tmp_path):
    assert batch_rows(options(), row_bytes=100, embedding_bytes=1536) == 1024
    assert batch_rows(options(), row_bytes=60_000, embedding_bytes=1536) == 8 * 1024**2 // 61_536
    assert batch_rows(options(block_bytes=10), row_bytes=60_000, embedding_bytes=0) == 1
    pa.parquet.write_table(pa.table({"text": ["x" * 1000] * 50}), tmp_path / "wide.parquet")
    assert 1000 <= estimate_row_bytes(str(tmp_path / "wide.parquet"), pa.fs.LocalFileSystem(), "parquet") < 1100
    (tmp_path / "lines.txt").write_text("abcdefghi\n" * 1000)
    assert estimate_row_bytes(str(tmp_path / "lines.txt"), pa.fs.LocalFileSystem(), "text") == 10


def test_a_local_output_is_refused_on_a_cluster_of_several_nodes_unless_shared():
    with pytest.raises(ValueError, match="local path, and this cluster has 2 nodes.*--output-shared"):
        check_output_reachable("/data/out", shared=False, nodes=2)
    check_output_reachable("/data/out", shared=True, nodes=2)
    check_output_reachable("s3://bucket/out", shared=False, nodes=2)
    check_output_reachable("/data/out", shared=False, nodes=1)
