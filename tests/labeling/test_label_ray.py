"""Bulk labeling end to end on the session's local Ray: row counts, bad rows, column contract, restarts."""

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from conftest import OBJECT_STORE_BYTES, dictionary_encoded_columns

from mtl.config import ModelConfig
from mtl.inference.model_folder import build_model, save_model_folder
from mtl.inference.predictor import Predictor
from mtl.labeling.options import LabelOptions
from mtl.labeling.output_folder import STAGING
from mtl.labeling.pipeline import run_labeling

pytestmark = pytest.mark.ray

GOOD = ["Alice Martin flew to Paris.", "terrible service at Hooli", "ok"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_encoder_dir, demo_specs):
    bundle = build_model(ModelConfig(encoder=str(tiny_encoder_dir), max_length=16), demo_specs)
    return save_model_folder(bundle, tmp_path_factory.mktemp("label-ray") / "model")


def read_output(folder):
    return pads.dataset(str(folder), format="parquet").to_table()


def label(model_dir, source, output, **options):
    return run_labeling(LabelOptions(model=str(model_dir), input=str(source), output=str(output),
                                     actor_batch_rows=64, max_actors=2, threads_per_actor=1, **options))


def test_text_corpus_seeded_with_bad_rows_gives_one_row_per_line(ray_local, model_dir, tmp_path):
    lines = [GOOD[i % 3] if i % 7 else "" for i in range(500)]
    lines[13] = "x" * 30_000  # over the character limit
    (tmp_path / "corpus.txt").write_text("\n".join(lines) + "\n")
    summary = label(model_dir, tmp_path / "corpus.txt", tmp_path / "out")
    table = read_output(tmp_path / "out")
    assert summary.rows == table.num_rows == 500
    errors = table.column("error").to_pylist()
    assert sum(error == "text is empty" for error in errors) == sum(1 for line in lines if not line)
    assert sum(error is not None and "limit is" in error for error in errors) == 1
    assert sorted(table.column("text").to_pylist()) == sorted(lines)
    assert (tmp_path / "out" / "_SUCCESS").exists() and not (tmp_path / "out" / STAGING).exists()
    written = sorted((tmp_path / "out").glob("*.parquet"))
    assert written
    assert [dictionary_encoded_columns(path) for path in written] == [[]] * len(written)  # the job's writer skips them


def test_parquet_keeps_columns_and_flags_nulls(ray_local, model_dir, tmp_path):
    ids = list(range(300))
    texts = [None if i % 10 == 0 else GOOD[i % 3] for i in ids]
    pq.write_table(pa.table({"id": ids, "text": texts, "source": ["web"] * 300}), tmp_path / "in.parquet")
    label(model_dir, tmp_path / "in.parquet", tmp_path / "out", tasks=("sentiment",), embedding_dtype="float16")
    table = read_output(tmp_path / "out")
    assert sorted(table.column("id").to_pylist()) == ids
    assert table.column_names[:3] == ["id", "text", "source"]
    assert "ner" not in table.column_names
    assert table.schema.field("embedding").type == pa.list_(pa.float16())
    rows = {row["id"]: row for row in table.to_pylist()}
    assert rows[10]["error"] == "text is null" and rows[10]["sentiment"] is None
    [expected] = Predictor.from_folder(model_dir, device="cpu").predict([rows[11]["text"]])
    assert rows[11]["sentiment"] == expected.labels["sentiment"].label and rows[11]["error"] is None
    assert rows[11]["sentiment_score"] == pytest.approx(expected.labels["sentiment"].score, abs=1e-5)


def test_jsonl_with_type_changes_and_broken_lines_keeps_every_line(ray_local, model_dir, tmp_path):
    lines = [json.dumps({"text": GOOD[i % 3], "n": i}) for i in range(200)]
    lines[5], lines[6] = json.dumps({"text": 17, "n": 5}), "{broken"
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    label(model_dir, tmp_path / "in.jsonl", tmp_path / "out")
    table = read_output(tmp_path / "out")
    assert table.num_rows == 200
    errors = [error for error in table.column("error").to_pylist() if error]
    assert sorted(errors) == ["no column 'text' in this row", "text must be a string, got int"]


def test_tokens_column_tags_pre_split_input(ray_local, model_dir, tmp_path):
    pq.write_table(pa.table({"tokens": [["EU", "rejects", "German", "call"]] * 50}), tmp_path / "conll.parquet")
    label(model_dir, tmp_path / "conll.parquet", tmp_path / "out", tokens_column="tokens")
    table = read_output(tmp_path / "out")
    assert table.num_rows == 50
    spans = [span for row in table.column("ner").to_pylist() for span in row]
    assert all(0 <= span["start"] < span["end"] <= 4 for span in spans)


def test_rerun_skips_a_complete_output_and_overwrite_replaces_it(ray_local, model_dir, tmp_path):
    lines = [f"{GOOD[i % 3]} number {i}" for i in range(400)]
    (tmp_path / "corpus.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    first = label(model_dir, tmp_path / "corpus.txt", out)
    assert sorted(read_output(out).column("text").to_pylist()) == sorted(lines)
    assert sorted(read_output(out).column("row_id").to_pylist()) == list(range(400))
    again = label(model_dir, tmp_path / "corpus.txt", out)
    assert again.skipped and read_output(out).num_rows == 400
    replaced = label(model_dir, tmp_path / "corpus.txt", out, overwrite=True)
    assert read_output(out).num_rows == 400 and not set(first.files) & set(replaced.files)


def test_a_file_of_the_user_in_the_output_folder_stops_the_job_and_survives(ray_local, model_dir, tmp_path):
    (tmp_path / "corpus.txt").write_text("\n".join(GOOD) + "\n")
    (tmp_path / "out").mkdir()
    pq.write_table(pa.table({"text": ["my own rows"]}), tmp_path / "out" / "mine.parquet")
    with pytest.raises(ValueError, match=r"did not write \(mine.parquet\)"):
        label(model_dir, tmp_path / "corpus.txt", tmp_path / "out", overwrite=True)
    assert read_output(tmp_path / "out").column("text").to_pylist() == ["my own rows"]


def test_input_column_clash_and_unknown_task_fail_before_work(ray_local, model_dir, tmp_path):
    pq.write_table(pa.table({"text": ["a"], "error": ["mine"]}), tmp_path / "in.parquet")
    with pytest.raises(ValueError, match=r"already has column\(s\) \['error'\]"):
        label(model_dir, tmp_path / "in.parquet", tmp_path / "out")
    with pytest.raises(ValueError, match=r"--tasks: unknown task\(s\) \['topic'\]"):
        label(model_dir, tmp_path / "in.parquet", tmp_path / "out", tasks=("topic",))


def spilled_bytes() -> int:
    """What this Ray session has spilled to disk so far, from Ray's own memory summary."""
    import ray
    from ray._private.internal_api import memory_summary

    # the session's own Ray, by address: another Ray on the machine must not confuse the look-up
    summary = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
    found = re.search(r"Spilled (\d+) MiB", summary)
    return int(found.group(1)) * 1024**2 if found else 0


def test_streams_a_corpus_larger_than_the_object_store(ray_local, model_dir, tmp_path):
    """Wide rows (60 kB kept beside each text) make a 4x-the-object-store corpus of only 6,400 rows.

    Ray Data's newer Parquet reader spilled 545 MiB of a 282 MiB corpus here, and batches of a fixed
    1,024 rows would each be 60 MiB; the job must stay within the store and spill little or nothing.
    It runs the default actor plan (an actor per CPU), which must leave the CPUs that Ray Data's own
    tasks ask for, or the pipeline stalls.
    """
    rng = np.random.default_rng(0)
    files, rows = 16, 400
    for part in range(files):
        texts = [f"{GOOD[index % 3]} {part}-{index}" for index in range(rows)]
        blobs = pa.array([rng.bytes(60_000) for _ in range(rows)], pa.binary())
        pq.write_table(pa.table({"text": texts, "blob": blobs}), tmp_path / f"part-{part:02d}.parquet",
                       row_group_size=100)
    corpus_bytes = sum(path.stat().st_size for path in tmp_path.glob("*.parquet"))
    assert corpus_bytes > 3.5 * OBJECT_STORE_BYTES
    spilled_before = spilled_bytes()
    summary = run_labeling(LabelOptions(model=str(model_dir), input=str(tmp_path / "*.parquet"),
                                        output=str(tmp_path / "out"), threads_per_actor=1))
    assert summary.rows == files * rows
    assert spilled_bytes() - spilled_before < OBJECT_STORE_BYTES / 2
    table = pads.dataset(str(tmp_path / "out"), format="parquet").to_table(columns=["text", "error"])
    assert table.column("error").null_count == files * rows
    assert len(set(table.column("text").to_pylist())) == files * rows
