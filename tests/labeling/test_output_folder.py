"""The label job's output folder, locally and on a real S3 server: what it refuses, replaces and commits."""

import json

import pytest

from mtl import storage
from mtl.labeling.output_folder import (
    SUCCESS,
    begin_run,
    checkpoint_path,
    commit,
    completed_files,
    pending_commit,
    reconcile,
    take_over,
)


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "out")
    return request.getfixturevalue("bucket") + "/out"


def finish(run, parts=("a.parquet", "b.parquet")):
    for part in parts:
        storage.write_bytes(storage.join(run.data, part), part.encode())
    return commit(run)


def test_a_run_commits_its_files_under_its_id_and_writes_success_last(output):
    run = begin_run(output, ["in.txt"], overwrite=False)
    files = finish(run)
    assert [storage.name(path) for path in files] == [f"part-{run.run_id}-00000.parquet",
                                                      f"part-{run.run_id}-00001.parquet"]
    assert completed_files(output) == files
    assert json.loads(storage.read_text(storage.join(output, SUCCESS)))["run_id"] == run.run_id
    assert storage.list_files(output, recursive=True, relative=True) == sorted(
        [SUCCESS, *(storage.name(path) for path in files)])


def test_a_folder_with_files_of_someone_else_is_refused_and_left_as_it_was(output):
    storage.write_text(storage.join(output, "mine.parquet"), "user data")
    with pytest.raises(ValueError, match=r"1 file\(s\) this job did not write \(mine.parquet\)"):
        begin_run(output, ["in.txt"], overwrite=True)
    assert storage.list_files(output, recursive=True, relative=True) == ["mine.parquet"]


def test_overwrite_removes_only_the_files_the_earlier_run_listed(output):
    first = finish(begin_run(output, ["in.txt"], overwrite=False))
    storage.write_text(storage.join(output, ".keep"), "hidden files are nobody's output")
    second_run = begin_run(output, ["in.txt"], overwrite=True)
    assert completed_files(output) is None, "an output being replaced must not look complete"
    second = finish(second_run, parts=("c.parquet",))
    left = storage.list_files(output, recursive=True, relative=True)
    assert left == sorted([".keep", SUCCESS, storage.name(second[0])])
    assert not any(storage.exists(path) for path in first)


def test_a_commit_killed_half_way_is_finished_by_the_next_run(output):
    run = begin_run(output, ["in.txt"], overwrite=False)
    for part in ("a.parquet", "b.parquet"):
        storage.write_bytes(storage.join(run.data, part), part.encode())
    plan_commit_then_kill_after_the_first_move(run)
    pending = pending_commit(output)
    assert pending is not None and pending.run_id == run.run_id
    files = commit(pending)
    assert [storage.read_bytes(path) for path in files] == [b"a.parquet", b"b.parquet"]
    assert pending_commit(output) is None and not storage.exists(run.staging)


def plan_commit_then_kill_after_the_first_move(run):
    original = storage.move
    moves = []

    def move_once(source, target):
        if moves:
            raise KeyboardInterrupt("killed")
        moves.append(source)
        original(source, target)

    storage.move = move_once
    try:
        with pytest.raises(KeyboardInterrupt):
            commit(run)
    finally:
        storage.move = original


def test_an_unfinished_run_resumes_over_the_same_input_and_is_refused_over_another(output):
    run = begin_run(output, ["a.txt", "b.txt"], overwrite=False)
    again = begin_run(output, ["a.txt", "b.txt"], overwrite=False)
    assert again.resumed and again.run_id == run.run_id
    with pytest.raises(ValueError, match="unfinished run over other input files"):
        begin_run(output, ["c.txt"], overwrite=False)
    fresh = begin_run(output, ["c.txt"], overwrite=True)
    assert not fresh.resumed and fresh.run_id != run.run_id


def test_an_output_of_an_earlier_version_counts_as_complete_and_its_files_as_ours(output):
    storage.write_text(storage.join(output, "old-000.parquet"), "rows")
    storage.write_text(storage.join(output, SUCCESS), "old-000.parquet\n")  # one name a line, no JSON
    assert completed_files(output) == [storage.join(output, "old-000.parquet")]
    run = begin_run(output, ["in.txt"], overwrite=True)
    finish(run, parts=("a.parquet",))
    assert storage.list_files(output, relative=True) == sorted([SUCCESS, f"part-{run.run_id}-00000.parquet"])


def test_a_resumed_run_says_who_wrote_it_last_until_another_attempt_takes_it_over(output):
    first = {"job_id": "01000000", "started": 1}
    begin_run(output, ["in.txt"], overwrite=False, attempt=first)
    resumed = begin_run(output, ["in.txt"], overwrite=False, attempt={"job_id": "02000000", "started": 2})
    assert resumed.earlier_attempt == first, "only take_over hands the run on"
    take_over(resumed, {"job_id": "02000000", "started": 2})
    assert begin_run(output, ["in.txt"], overwrite=False).earlier_attempt == {"job_id": "02000000", "started": 2}


def test_reconcile_holds_the_staged_blocks_to_what_the_checkpoint_says_is_done(output):
    """The states a killed attempt leaves: a block done (record committed, file written); a task cut
    off before committing (record pending); a late commit whose file the next attempt had already
    discarded (record, no file); a late file whose pending record had been discarded (file, no record)."""
    run = begin_run(output, ["in.txt"], overwrite=False)
    records = checkpoint_path(output)
    for name in ("done.parquet", "cut_off.pending.parquet", "discarded_file.parquet"):
        storage.write_bytes(storage.join(records, name), b"row ids")
    for name in ("done-0.parquet", "done-1.parquet", "cut_off-0.parquet", "late_file-0.parquet"):
        storage.write_bytes(storage.join(run.data, name), b"rows")

    assert reconcile(run) == 1, "one block's rows must be labeled again"
    assert storage.list_files(records, relative=True) == ["done.parquet"]
    assert storage.list_files(run.data, relative=True) == ["done-0.parquet", "done-1.parquet"]
    assert reconcile(run) == 0
