"""The jobs' own terminal output: a progress bar and a summary, with Ray's logs, the workers' output
and Ray Data's progress bars kept out unless --verbose. Each job runs as a user runs it (python -m),
as a driver of the session's Ray."""

import os
import subprocess
import sys

import pytest
import yaml
from conftest import REPO
from train_configs import demo_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# what Ray prints when its output reaches the terminal: worker prefixes, Ray Data's plan and bars
RAY_NOISE = ("(MapWorker", "(RayTrainWorker", "pid=", "Running Dataset", "Execution plan", "INFO ")


def _terminal_lines(run: subprocess.CompletedProcess) -> list[str]:
    """What the job printed, line by line (a bar redraws itself with \\r on one line), less the one
    line that Ray's C++ core prints in the driver whenever Ray Data starts an actor pool
    (ray-project/ray#57733), which no Python setting reaches, and the raylet's warnings about the
    session's warm worker pool (conftest's WARM_WORKER_POOL: the raylet tells whichever driver is
    connected each time its worker count passes another multiple of its startup concurrency)."""
    lines = (run.stdout + run.stderr).strip().split("\n")
    return [line for line in lines if line.strip() and "core_worker.cc" not in line
            and "PYTHON worker processes have been started" not in line]


def _other_than_bar(run: subprocess.CompletedProcess, bar: str) -> list[str]:
    return [line for line in _terminal_lines(run) if not line.startswith(bar)]


def _run(ray_local, *arguments: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address,
                   "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", *arguments], cwd=REPO, env=environment, capture_output=True,
                          text=True, timeout=300)


def test_label_prints_one_progress_bar_and_a_summary_and_verbose_brings_rays_output_back(
        ray_local, tiny_model_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"Sentence number {index} about Paris." for index in range(300)) + "\n")
    quiet = _run(ray_local, "jobs.label", "--model", str(tiny_model_dir), "--input", str(corpus),
                 "--output", str(tmp_path / "quiet"))
    assert quiet.returncode == 0, quiet.stderr
    output = quiet.stdout + quiet.stderr
    assert not [noise for noise in RAY_NOISE if noise in output], output
    assert "labeling:" in quiet.stderr and "row/s" in quiet.stderr
    assert "300/300" in quiet.stderr   # a text file's rows are estimated from its size: here exactly
    summary = _other_than_bar(quiet, "labeling:")
    # the bar (redrawn on a line of its own every 30 s when not on a terminal), and the summary
    assert len(summary) == 1 and summary[0].startswith("labeled 300 rows in "), output
    verbose = _run(ray_local, "jobs.label", "--model", str(tiny_model_dir), "--input", str(corpus),
                   "--output", str(tmp_path / "verbose"), "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert "labeling:" not in verbose.stderr and "Running Dataset" in verbose.stdout + verbose.stderr


def test_train_prints_one_progress_bar_then_its_summary(ray_local, tiny_encoder_dir, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(demo_config(str(tiny_encoder_dir), str(tmp_path / "run"), epochs=1)))
    run = _run(ray_local, "jobs.train", "--config", str(config))
    assert run.returncode == 0, run.stderr
    output = run.stdout + run.stderr
    assert not [noise for noise in RAY_NOISE if noise in output], output
    assert "training: 100%" in run.stderr and "8/8" in run.stderr and "sentences/s" in run.stderr
    assert f"best model: {tmp_path / 'run' / 'best'}" in run.stdout.splitlines()
    assert len(_other_than_bar(run, "training:")) <= 10, output   # the summary: scores, files, workers
