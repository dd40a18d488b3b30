"""Training throughput: the Ray Train job against a plain PyTorch loop, and 1 against 2 workers.

    python benchmarks/train_throughput.py [--config jobs/configs/demo.yaml] [--epochs 2] [--part small|scale-out]

small: the job with one worker against a plain loop, on a local Ray. Both train the same model on
the same data (the plain loop tokenizes it all in memory first; the job reads it through Ray Data),
with the same batch size, mixing and optimizer settings. Each is timed over its steps, from taking
a batch to the optimizer step (evaluation and checkpoints excluded on both sides); the ratio is Ray
Train's sentences/s over the plain loop's.

scale-out: the job with 1 worker, then with 2, on a two-node loopback cluster of one CPU per node
(scripts/local_cluster.py), one worker per node. The job's sentences/s is the number of workers
times rank 0's rate (the ranks step together); scaling efficiency is the 2-worker rate over twice
the 1-worker rate. Rank 0's step time is split into the time with a gradient all-reduce in flight
(DDP's communication hook times it) and compute alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from mtl.config import load_config
from mtl.data.features import Featurizer
from mtl.data.mixing import TaskMixer
from mtl.data.readers import read_rows
from mtl.inference.model_folder import build_model, resolve_encoder
from mtl.train.optim import build_optimizer, build_scheduler, parameter_groups
from mtl.train.weighting import LossWeighting


def in_memory_features(config, specs) -> dict[str, list[dict]]:
    """Every task's training rows, capped as the job caps them, tokenized up front."""
    featurizer = Featurizer(tokenizer=AutoTokenizer.from_pretrained(resolve_encoder(config.model.encoder)),
                            max_length=config.model.max_length)
    features = {}
    for task, spec in zip(config.tasks, specs):
        rows = read_rows(task.train, task.kind)
        limit = config.train.max_examples_per_task
        if limit and len(rows) > limit:
            rows = [rows[index] for index in np.sort(np.random.default_rng(config.train.seed).choice(len(rows), limit,
                                                                                                     replace=False))]
        make = featurizer.classification_features if task.kind == "classification" else featurizer.tagging_features
        features[task.name] = make(rows, spec)
    return features


def plain_loop(config, specs) -> float:
    """The baseline: the same model, mixing and optimizer in a bare loop over in-memory batches;
    returns sentences/s."""
    settings = config.train
    torch.manual_seed(settings.seed)
    features = in_memory_features(config, specs)
    bundle = build_model(config.model, specs)
    model = bundle.model.train()
    weighting = LossWeighting(strategy="static", tasks=[spec.name for spec in specs])
    batch_counts = {task: math.ceil(len(rows) / settings.batch_size) for task, rows in features.items()}
    mixer = TaskMixer(batch_counts=batch_counts, strategy=settings.mixing, seed=settings.seed)
    optimizer = build_optimizer(parameter_groups(model, weighting, settings, {}))
    scheduler = build_scheduler(optimizer, settings, mixer.steps_per_epoch * settings.epochs)
    draws, sentences, seconds = {}, 0, 0.0
    for epoch in range(settings.epochs):
        for task in mixer.schedule(epoch):
            started = time.perf_counter()
            batch = bundle.featurizer.collate(in_memory_batch(features[task], draws.get(task, 0), settings))
            draws[task] = draws.get(task, 0) + 1
            labels = batch.pop("labels")
            loss = model(**batch, tasks=[task], labels={task: labels}).losses[task]
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seconds += time.perf_counter() - started
            sentences += len(labels)
    return sentences / seconds


def in_memory_batch(rows: list[dict], draw: int, settings) -> list[dict]:
    per_pass = math.ceil(len(rows) / settings.batch_size)
    data_pass, index = divmod(draw, per_pass)
    order = np.random.default_rng([settings.seed, data_pass]).permutation(len(rows))
    return [rows[position] for position in order[index * settings.batch_size:(index + 1) * settings.batch_size]]


def small_data(args) -> None:
    output = tempfile.mkdtemp(prefix="mtl-train-throughput-")
    cpus = os.cpu_count() or 1
    config = load_config(args.config, [f"train.epochs={args.epochs}", "train.num_workers=1", "train.patience=null",
                                       f"train.cpus_per_worker={cpus}", f"output={output}",
                                       "train.loss_weighting=static"])
    torch.set_num_threads(cpus)  # the Ray worker gets as many threads as it has CPUs
    import ray

    from mtl.train.data_plan import plan_training_data
    from mtl.train.trainer import fit

    ray.init(ignore_reinit_error=True)
    specs, _ = plan_training_data(config)
    baseline = plain_loop(config, specs)
    started = time.perf_counter()
    summary = fit(config)
    wall = time.perf_counter() - started
    ray.shutdown()
    print(f"\n{'':<22} {'sentences/s':>12}")
    print(f"{'plain PyTorch loop':<22} {baseline:>12.1f}")
    print(f"{'Ray Train, 1 worker':<22} {summary.worker_sentences_per_second:>12.1f}")
    print(f"ratio (Ray Train / plain): {summary.worker_sentences_per_second / baseline:.3f}")
    print(f"Ray Train job end to end, including start-up, data, evaluation and checkpoints: {wall:.0f}s")


def scale_out(args) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from local_cluster import LocalCluster

    work = Path(tempfile.mkdtemp(prefix="mtl-scale-out-"))
    cluster = LocalCluster(work, {}, head_cpus=1, worker_cpus=1)
    rows = []
    try:
        cluster.start()
        for workers in (1, 2):  # each job from a driver process of its own, as `ray job submit` runs it
            done = cluster.run([sys.executable, __file__, "--config", args.config, "--epochs", str(args.epochs),
                                "--workers-on", f"127.0.0.1:{cluster.gcs_port}", str(workers),
                                str(work / f"run-{workers}")], timeout=1200)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        cluster.stop()
    print(f"\n{'workers':>7} {'job sentences/s':>16} {'efficiency':>10} {'step ms':>8} {'compute ms':>11} "
          f"{'all-reduce ms':>14} {'wall s':>7}")
    single = rows[0]["job_rate"]
    for row in rows:
        step, allreduce = row["seconds_per_step"] * 1000, row["allreduce_seconds_per_step"] * 1000
        print(f"{row['workers']:>7} {row['job_rate']:>16.1f} {row['job_rate'] / (single * row['workers']):>10.2f} "
              f"{step:>8.0f} {step - allreduce:>11.0f} {allreduce:>14.0f} {row['wall']:>7.0f}")


def train_on_cluster(args, address: str, workers: int, output: str) -> dict:
    """One scale-out job, from this process as its driver; its figures."""
    import ray

    from mtl.train.trainer import fit

    config = load_config(args.config, [
        f"train.epochs={args.epochs}", f"train.num_workers={workers}", "train.cpus_per_worker=1",
        "train.placement_strategy=SPREAD", "train.patience=null", "train.loss_weighting=static",
        f"output={output}", "train.storage_shared=true"])
    ray.init(address=address, log_to_driver=False)
    started = time.perf_counter()
    summary = fit(config)
    return {"workers": workers, "job_rate": summary.worker_sentences_per_second * workers,
            "seconds_per_step": summary.seconds_per_step,
            "allreduce_seconds_per_step": summary.allreduce_seconds_per_step,
            "wall": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="jobs/configs/demo.yaml")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--part", choices=["small", "scale-out"], action="append",
                        help="run only this part (default: both)")
    parser.add_argument("--workers-on", nargs=3, help=argparse.SUPPRESS)  # ADDRESS WORKERS OUTPUT: one job
    args = parser.parse_args()
    if args.workers_on:
        address, workers, output = args.workers_on
        print(json.dumps(train_on_cluster(args, address, int(workers), output)))
        return
    for part in args.part or ["small", "scale-out"]:
        {"small": small_data, "scale-out": scale_out}[part](args)


if __name__ == "__main__":
    main()
