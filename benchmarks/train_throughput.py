"""Training throughput: the Ray Train job (1 worker) against a plain PyTorch loop, in one run.

    python benchmarks/train_throughput.py [--config jobs/configs/demo.yaml] [--epochs 2]

Both train the same model on the same tokenized data, batches and optimizer settings. Each is
timed over its forward, backward and optimizer steps only (evaluation and checkpoints excluded on
both sides); the ratio is Ray Train's sentences/s over the plain loop's.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from mtl.checkpoint import build_model
from mtl.config import load_config
from mtl.data.mixing import TaskBatches, TaskMixer
from mtl.train.optim import build_optimizer, build_scheduler, parameter_groups
from mtl.train.prepare import prepare_data
from mtl.train.weighting import LossWeighting


def plain_loop(config, prepared) -> float:
    """The baseline: the same model, batches and optimizer in a bare loop; returns sentences/s."""
    settings = config.train
    torch.manual_seed(settings.seed)
    bundle = build_model(config.model, prepared.specs)
    model = bundle.model.train()
    weighting = LossWeighting(strategy="static", tasks=[spec.name for spec in prepared.specs])
    batches = {spec.name: TaskBatches(examples=prepared.train_features[spec.name], batch_size=settings.batch_size,
                                      seed=settings.seed, task_index=index)
               for index, spec in enumerate(prepared.specs)}
    mixer = TaskMixer(batch_counts={task: source.batches_per_pass for task, source in batches.items()},
                      strategy=settings.mixing, seed=settings.seed)
    optimizer = build_optimizer(parameter_groups(model, weighting, settings, {}))
    scheduler = build_scheduler(optimizer, settings, mixer.steps_per_epoch * settings.epochs)
    draws, sentences, seconds = {}, 0, 0.0
    for epoch in range(settings.epochs):
        for task in mixer.schedule(epoch):
            started = time.perf_counter()
            batch = bundle.featurizer.collate(batches[task].batch(draws.get(task, 0)))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="jobs/configs/demo.yaml")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--output", default="runs/benchmark_train_throughput")
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    config = load_config(args.config, [f"train.epochs={args.epochs}", "train.num_workers=1", "train.patience=null",
                                       f"train.cpus_per_worker={cpus}", f"output={args.output}",
                                       "train.loss_weighting=static"])
    torch.set_num_threads(cpus)  # the Ray worker gets as many threads as it has CPUs
    baseline = plain_loop(config, prepare_data(config))

    import ray

    from mtl.train.trainer import fit

    ray.init(ignore_reinit_error=True)
    started = time.perf_counter()
    summary = fit(config)
    wall = time.perf_counter() - started
    print(f"\n{'':<22} {'sentences/s':>12}")
    print(f"{'plain PyTorch loop':<22} {baseline:>12.1f}")
    print(f"{'Ray Train, 1 worker':<22} {summary.worker_sentences_per_second:>12.1f}")
    print(f"ratio (Ray Train / plain): {summary.worker_sentences_per_second / baseline:.3f}")
    print(f"Ray Train job end to end, including start-up, data, evaluation and checkpoints: {wall:.0f}s")


if __name__ == "__main__":
    main()
