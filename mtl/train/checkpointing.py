"""A worker's evaluation: every rank scores its share, the counts are summed, early stopping is
decided alike on every rank, and every rank reports with rank 0's checkpoint (or the others wait forever)."""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path

import ray.train

from mtl.config import EMBEDDING_METRICS
from mtl.inference.predictor import Predictor
from mtl.train.collectives import gather, hand_epoch_losses_to_rank_0, mean_across_ranks
from mtl.train.device import peak_rss
from mtl.train.state import random_state
from mtl.train.validation import add_counts, evaluation_counts, reports_from_counts
from mtl.train.worker import Worker


def evaluate_and_checkpoint(worker: Worker) -> None:
    """Evaluate, update early stopping, and report the metrics with a checkpoint (rank 0 writes it;
    every rank reports, or the others wait for it forever)."""
    config, state = worker.config, worker.state
    train_losses = mean_across_ranks(state.loss_sums, state.loss_counts)
    state.loss_sums, state.loss_counts = {}, {}
    if worker.eval_rows:
        # each rank scores its share; the summed counts give every rank the same, exact metrics
        predictor = Predictor(worker.bundle, device=worker.device, batch_size=config.train.eval_batch_size)
        counts = add_counts(gather(evaluation_counts(predictor, worker.eval_rows)))
        results = reports_from_counts(counts, predictor.task_specs)
    else:  # no eval data: lower training loss (of all ranks, so that all decide alike) is better
        results = {"tasks": {}, "combined": -sum(train_losses.values())}
    _record_evaluation(worker, results, train_losses)
    hand_epoch_losses_to_rank_0(state, worker.rank)
    state.peak_worker_rss = max(state.peak_worker_rss, *gather(peak_rss()))
    state.peak_worker_private_rss = max(gather(state.peak_worker_private_rss))
    reports = {**results["tasks"], **({EMBEDDING_METRICS: results["embedding"]} if "embedding" in results else {})}
    metrics = {"epoch": state.epoch, "step": state.step, "combined": results["combined"],
               **{f"{task}/{name}": value for task, report in reports.items()
                  for name, value in report.items() if isinstance(value, (int, float))},
               **{f"{task}/train_loss": value for task, value in train_losses.items()}}
    random_states = gather(random_state())  # every rank's, written by rank 0
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if worker.rank == 0:
            metadata = {"trained_at": datetime.now(timezone.utc).isoformat(), "epoch": state.epoch,
                        "step": state.step, "metrics": results, "config": config.model_dump()}
            worker.checkpointed.save(Path(folder), specs=worker.specs, metadata=metadata,
                                     random_states=random_states)
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report(metrics, checkpoint=checkpoint)


def _record_evaluation(worker: Worker, results: dict, train_losses: dict[str, float]) -> None:
    """Early stopping's count, and the evaluation in the run's history."""
    state, patience = worker.state, worker.config.train.patience
    combined = results["combined"]
    if combined > state.best:
        state.best, state.evals_without_improvement = combined, 0
    else:
        state.evals_without_improvement += 1
    state.stopped_early = bool(patience and state.evals_without_improvement >= patience
                               and state.epoch < worker.config.train.epochs)
    state.history.append({"epoch": state.epoch, "step": state.step, "combined": combined,
                          "train_loss": train_losses, "weights": worker.checkpointed.weighting.weights(),
                          "weights_by_rank": gather(worker.checkpointed.weighting.weights()),
                          "tasks": results["tasks"], **({"embedding": results["embedding"]}
                                                         if "embedding" in results else {})})
