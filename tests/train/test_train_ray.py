"""End-to-end training on the session's local Ray: two workers, resume, and a lost worker."""

import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEMO, s3_keys
from train_configs import demo_config, write_pairs

from mtl import storage
from mtl.config import EMBEDDING_METRICS, validate_config
from mtl.data.readers import read_rows
from mtl.inference.model_folder import load_model_folder
from mtl.inference.predictor import Predictor
from mtl.inference.reference import read_reference, reference_statistics, reference_texts
from mtl.train.trainer import fit
from mtl.train.validation import evaluate

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def expected_steps(examples: int, workers: int, batch_size: int, epochs: int, accumulation: int = 1,
                   tasks: int = 2) -> int:
    batches_per_task = math.ceil(examples // workers / batch_size)
    return math.ceil(tasks * batches_per_task / accumulation) * epochs


def test_two_workers_train_export_the_best_model_and_resume_when_run_again(ray_local, tiny_encoder_dir, tmp_path):
    raw = demo_config(str(tiny_encoder_dir), str(tmp_path / "run"), num_workers=2, mixing="round_robin",
                      loss_weighting="uncertainty", gradual_unfreezing={"every": 2, "unit": "steps"},
                      preserve_embedding={"weight": 1.0})
    # a similarity task on scored pairs, measured (like the embedding itself) by Spearman
    pairs = {"path": str(write_pairs(tmp_path / "pairs.jsonl", 64)), "score_column": "score", "score_range": [0, 5]}
    raw["tasks"].append({"name": "paraphrase", "kind": "similarity", "train": pairs, "eval": pairs})
    raw["embedding_eval"] = pairs
    summary = fit(validate_config(raw))
    assert summary.resumes == 0
    assert summary.steps == expected_steps(64, 2, 16, 2, tasks=3)
    assert [entry["epoch"] for entry in summary.history] == [1, 2]
    assert summary.best["combined"] == max(entry["combined"] for entry in summary.history)
    # the exported folder is the best model: evaluated again, it scores what training reported for it
    predictor = Predictor.from_folder(summary.best_model, device="cpu")
    config = validate_config(raw)
    eval_rows = {task.name: read_rows(task.eval, task.kind) for task in config.tasks}
    again = evaluate(predictor, {**eval_rows, EMBEDDING_METRICS: eval_rows["paraphrase"]})
    assert again["combined"] == pytest.approx(summary.best["combined"], abs=1e-6)
    assert summary.best["tasks"]["paraphrase"]["pairs"] == 64  # both workers' halves, gathered
    assert again["embedding"]["spearman"] == pytest.approx(summary.best["embedding"]["spearman"], abs=1e-6)
    assert summary.best["embedding"]["spearman"] == summary.best["tasks"]["paraphrase"]["spearman"]
    # the reference statistics of drift: the held-out texts of every task, as the best model answers them
    texts = reference_texts(config, config.train.reference_texts)
    assert len(texts) == 100 + 100 + 2 * 64   # the two demo eval sets, and both sides of 64 pairs
    stored_reference = read_reference(summary.best_model)
    recomputed = reference_statistics(texts, predictor.predict(texts))
    assert stored_reference.texts == len(texts) and stored_reference.labels == recomputed.labels
    np.testing.assert_allclose(stored_reference.embedding_mean, recomputed.embedding_mean, atol=1e-6)
    # preservation ran on the classification and tagging batches: its loss is logged beside theirs
    assert all(entry["train_loss"][EMBEDDING_METRICS] > 0 for entry in summary.history)
    assert [spec.kind for spec in load_model_folder(summary.best_model).specs] == [
        "classification", "tagging", "similarity"]
    stored = json.loads(Path(summary.metrics_file).read_text())
    assert set(stored) >= {"best", "history", "steps", "resumes"}
    # where rank 0 trained, as the job reports it (scripts/gpu_check.py sees "cuda:0 (...), bf16 autocast")
    assert summary.devices == stored["devices"] == ["cpu, float32"]
    # two workers: part of each step had an all-reduce in flight, and memory was sampled
    assert 0 < summary.allreduce_seconds_per_step < summary.seconds_per_step
    # (the kernel's per-CPU memory counters lag by a few pages: a MiB of slack)
    assert 0 < stored["peak_worker_private_rss_bytes"] <= stored["peak_worker_rss_bytes"] + 2**20
    assert {Path(path).name for path in summary.plots} == {
        "learning_curve_sentiment.png", "learning_curve_ner.png", "learning_curve_paraphrase.png",
        "learning_curve_embedding.png", "confusion_sentiment.png"}
    assert all(Path(path).read_bytes()[:4] == b"\x89PNG" for path in summary.plots)
    assert "combined" in summary.table()
    # run again with the same output and one more epoch: it goes on from the last checkpoint
    again = fit(validate_config({**raw, "train": {**raw["train"], "epochs": 3}}))
    assert again.resumes == 1 and again.devices == ["cpu, float32"] * 2
    assert again.steps == expected_steps(64, 2, 16, 3, tasks=3)
    assert [entry["epoch"] for entry in again.history] == [1, 2, 3]
    assert again.history[:2] == summary.history


def kill_a_worker_after_first_checkpoint(run_folder: str, deadline: float) -> int:
    from ray._private import state  # the GCS actor table; the public state API needs the dashboard

    while time.time() < deadline:
        # the snapshot is written once a reported checkpoint is registered, not while it is uploading
        if storage.is_file(storage.join(run_folder, "checkpoint_manager_snapshot.json")):
            workers = [actor["Pid"] for actor in state.actors().values()
                       if actor["ActorClassName"] == "RayTrainWorker" and actor["State"] == "ALIVE"]
            if workers:
                os.kill(workers[0], signal.SIGKILL)
                return workers[0]
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared in time")


def test_a_run_on_s3_that_loses_a_worker_mid_epoch_ends_as_an_uninterrupted_run_does(
        ray_local, tiny_encoder_dir, bucket, tmp_path, monkeypatch):
    """Two workers; data, checkpoints and the exported model all on S3, as on a cluster with no
    shared disk. A worker is killed after the first (mid-epoch) checkpoint; the resumed run must
    take the same steps on the same batches with the same random draws as a run never interrupted."""
    monkeypatch.chdir(tmp_path)
    for name in ("train.jsonl", "eval.jsonl"):
        storage.write_bytes(f"{bucket}/data/{name}", (DEMO / name).read_bytes())

    def config(output: str):
        raw = demo_config(str(tiny_encoder_dir), output, num_workers=2, epochs=3, max_examples_per_task=128,
                          loss_weighting="dwa", grad_accumulation=2, eval_every_steps=3, max_failures=2)
        for task in raw["tasks"]:
            task["train"]["path"], task["eval"]["path"] = f"{bucket}/data/train.jsonl", f"{bucket}/data/eval.jsonl"
        return validate_config(raw)

    straight = fit(config(f"{bucket}/straight"))
    outcome = {}
    training = threading.Thread(target=lambda: outcome.update(summary=fit(config(f"{bucket}/run"))))
    training.start()
    killed = kill_a_worker_after_first_checkpoint(f"{bucket}/run/ray/mtl-train", time.time() + 240)
    training.join(timeout=300)
    assert not training.is_alive(), "training did not finish after the worker was killed"
    summary = outcome["summary"]
    assert killed and summary.resumes == 1 and straight.resumes == 0
    assert summary.steps == straight.steps == expected_steps(128, 2, 16, 3, accumulation=2)
    assert [(entry["step"], entry["epoch"]) for entry in summary.history] == \
        [(entry["step"], entry["epoch"]) for entry in straight.history]
    for resumed_entry, straight_entry in zip(summary.history, straight.history):
        assert resumed_entry["combined"] == pytest.approx(straight_entry["combined"], abs=1e-6)
        assert resumed_entry["train_loss"] == pytest.approx(straight_entry["train_loss"], rel=1e-5)
        assert resumed_entry["weights"] == pytest.approx(straight_entry["weights"], rel=1e-5)
    resumed_model = load_model_folder(summary.best_model).model.state_dict()
    for name, tensor in load_model_folder(straight.best_model).model.state_dict().items():
        torch.testing.assert_close(resumed_model[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert summary.best_model == f"{bucket}/run/best"
    assert json.loads(storage.read_text(summary.metrics_file))["resumes"] == 1
    keys = s3_keys(bucket, "run/")
    assert "run/best/mtl.json" in keys and any(key.startswith("run/ray/mtl-train/checkpoint_") for key in keys)
    assert list(tmp_path.iterdir()) == [], "a run on S3 wrote into the working folder"


def test_two_workers_without_eval_data_decide_alike_and_share_dwa_weights(ray_local, tiny_encoder_dir, tmp_path):
    """With no eval data the score is the training loss: all ranks must see the same one, or one
    rank stops early while the other waits for it in a collective forever."""
    raw = demo_config(str(tiny_encoder_dir), str(tmp_path / "run"), num_workers=2, epochs=4, loss_weighting="dwa",
                      patience=4, eval_every_steps=3)
    for task in raw["tasks"]:
        task.pop("eval")
    summary = fit(validate_config(raw))
    assert summary.history, "no evaluation was reported"
    for entry in summary.history:
        first, second = entry["weights_by_rank"]
        assert first == second == entry["weights"]
    assert any(entry["weights"] != {"sentiment": 1.0, "ner": 1.0} for entry in summary.history), "DWA never moved"


@pytest.mark.parametrize("strategy", ["gradnorm", "pcgrad"])
def test_two_workers_balance_the_gradients_of_every_task_in_each_step(ray_local, tiny_encoder_dir, tmp_path,
                                                                       strategy):
    """A step of every task, accumulated over two micro-batches and averaged across ranks by hand
    (DDP's own all-reduce is off for these steps): the ranks must stay in step, GradNorm's weights
    the same on both, and a head-only task, a cyclical schedule and relational preservation must
    run beside it."""
    raw = demo_config(str(tiny_encoder_dir), str(tmp_path / "run"), num_workers=2, mixing="all_tasks",
                      loss_weighting=strategy, grad_accumulation=2, schedule="triangular", cycles=2,
                      eval_every_steps=2, preserve_embedding={"weight": 1.0, "loss": "similarities"})
    raw["tasks"][0]["head_only_steps"] = 2
    summary = fit(validate_config(raw))
    # 64 rows per task, 32 per rank: 2 batches of 16 per task; 2 all-task micro-batches per step
    assert summary.steps == expected_steps(64, 2, 16, 2, accumulation=2, tasks=1)
    assert len(summary.history) == 2
    for entry in summary.history:
        first, second = entry["weights_by_rank"]
        assert first == second == entry["weights"]
        assert set(entry["train_loss"]) == {"sentiment", "ner", EMBEDDING_METRICS}
        assert all(math.isfinite(loss) for loss in entry["train_loss"].values())
    if strategy == "gradnorm":
        weights = summary.history[-1]["weights"]
        assert sum(weights.values()) == pytest.approx(2.0)
        assert weights != {"sentiment": 1.0, "ner": 1.0}, "GradNorm never moved the weights"
