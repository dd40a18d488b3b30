"""Bulk labeling on object storage (a real S3 server): S3 in, S3 out, a model on S3, and a job killed
half-way that, run again, labels only what was left."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.dataset as pads
import pytest
from conftest import REPO, s3_keys

from mtl import storage
from mtl.errors import OutputInUseError
from mtl.labeling.attempts import this_attempt, wait_for_attempt_to_end
from mtl.labeling.options import LabelOptions
from mtl.labeling.output_folder import checkpoint_path
from mtl.labeling.pipeline import run_labeling

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def s3_model(tiny_model_dir, s3_server):
    import boto3

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="models")
    storage.upload_folder(tiny_model_dir, "s3://models/tiny", last="mtl.json")
    return "s3://models/tiny"


def put_corpus(uri: str, lines: list[str], files: int) -> None:
    per_file = len(lines) // files
    for part in range(files):
        storage.write_text(f"{uri}/corpus-{part}.txt", "\n".join(lines[part * per_file:(part + 1) * per_file]) + "\n")


def read_bucket_output(uri: str):
    filesystem, path = storage.resolve(uri)
    return pads.dataset(path, filesystem=filesystem, format="parquet").to_table()


def test_s3_corpus_is_labeled_into_s3_with_a_model_from_s3_and_nothing_written_locally(
        ray_local, s3_model, bucket, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = [f"Alice Martin flew to Paris, trip {i}." for i in range(600)]
    put_corpus(f"{bucket}/in", lines, files=3)
    summary = run_labeling(LabelOptions(model=s3_model, input=f"{bucket}/in/", output=f"{bucket}/out",
                                        actor_batch_rows=64, max_actors=2, threads_per_actor=1))
    assert summary.rows == 600 and summary.resumed_rows == 0
    table = read_bucket_output(f"{bucket}/out")
    assert sorted(table.column("text").to_pylist()) == sorted(lines)
    assert table.column("error").null_count == 600
    keys = [key for key in s3_keys(bucket, "out/") if not key.endswith("/")]  # pyarrow's folder markers
    assert "out/_SUCCESS" in keys and len(keys) == len(summary.files) + 1
    assert not any(key.startswith("out/_mtl_staging") for key in keys)
    assert list(tmp_path.iterdir()) == [], "labeling to S3 wrote into the working folder"


def test_a_label_job_killed_half_way_resumes_with_only_the_rest(ray_local, s3_model, bucket):
    lines = [f"Bob works for Acme Corp in Berlin, line {i}." for i in range(6000)]
    put_corpus(f"{bucket}/in", lines, files=4)
    command = [sys.executable, "-m", "jobs.label", "--model", s3_model, "--input", f"{bucket}/in/",
               "--output", f"{bucket}/out", "--batch-size", "16", "--actors", "1", "--threads-per-actor", "1"]
    environment = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    job = subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_labeled_files(f"{bucket}/out/_mtl_staging/data", at_least=4, job=job)
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=60)
    run_record = json.loads(storage.read_text(f"{bucket}/out/_mtl_staging/run.json"))
    assert not storage.exists(f"{bucket}/out/_SUCCESS")
    wait_for_attempt_to_end(run_record["attempt"])
    leave_what_a_late_write_task_leaves(f"{bucket}/out")

    summary = run_labeling(LabelOptions(model=s3_model, input=f"{bucket}/in/", output=f"{bucket}/out",
                                        actor_batch_rows=256, max_actors=2, threads_per_actor=1))
    print(f"resume: the rerun labeled {summary.rows - summary.resumed_rows} of {len(lines)} rows; "
          f"{summary.resumed_rows} came from the killed run")
    assert 0 < summary.resumed_rows < len(lines)
    table = read_bucket_output(f"{bucket}/out")
    row_ids = table.column("row_id").to_pylist()
    assert table.num_rows == len(lines) == len(set(row_ids)), "rows lost or labeled twice"
    assert sorted(table.column("text").to_pylist()) == sorted(lines)


def leave_what_a_late_write_task_leaves(output: str) -> None:
    """A write task of the killed job that was still running while the rerun recovered leaves either
    a committed block whose file the rerun discarded, or a file whose pending record it discarded."""
    committed = [path for path in storage.list_files(checkpoint_path(output)) if not path.endswith(".pending.parquet")]
    assert len(committed) >= 2, "the killed job committed too few blocks to stage both cases"
    data = storage.list_files(f"{output}/_mtl_staging/data")
    file_gone, record_gone = (storage.name(path).removesuffix(".parquet") for path in committed[:2])
    for path in data:
        if storage.name(path).startswith(file_gone + "-"):
            storage.delete_file(path)
    storage.delete_file(committed[1])
    assert any(storage.name(path).startswith(record_gone + "-") for path in data)


def test_a_rerun_waits_for_the_attempt_it_resumes_and_names_it_if_it_does_not_end(ray_local):
    environment = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    script = ("import json, time, ray; from mtl.labeling.attempts import this_attempt; ray.init(); "
              "print(json.dumps(this_attempt()), flush=True); time.sleep(600)")
    driver = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=environment,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        attempt = json.loads(driver.stdout.readline())
        with pytest.raises(OutputInUseError, match=f"Ray job {attempt['job_id']} is still labeling into it after 1s"):
            wait_for_attempt_to_end(attempt, seconds=1)
    finally:
        driver.kill()
        driver.wait(timeout=60)
    wait_for_attempt_to_end(attempt, seconds=60)  # its job ends with its driver
    wait_for_attempt_to_end({**attempt, "started": 0}, seconds=0)  # the same id on an earlier cluster
    wait_for_attempt_to_end(this_attempt(), seconds=0)  # an earlier call in this driver


def wait_for_labeled_files(folder: str, *, at_least: int, job: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if job.poll() is not None:
            pytest.fail(f"the label job ended before it could be killed: {job.stderr.read().decode()[-3000:]}")
        if len([path for path in storage.list_files(folder) if path.endswith(".parquet")]) >= at_least:
            return
        time.sleep(0.2)
    pytest.fail(f"no labeled files in {folder} after {seconds}s")
