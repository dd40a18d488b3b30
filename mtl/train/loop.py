"""The per-worker training loop that Ray Train runs on every worker: the set-up is ``worker``, a
step ``step``, evaluation and the checkpoint ``checkpointing``; only these and ``collectives`` call Ray.

Every worker runs ``train_loop_per_worker``: it builds the model, restores the last checkpoint
when there is one (a replaced worker, or a rerun with the same output), and follows the task
schedule of ``TaskMixer``, which is the same on every worker. Every decision that could differ
between ranks (early stopping, DWA's weights) is taken from values gathered from all ranks, so all
take the same branch; each worker evaluates its share of the eval data and the counts are summed.
Every worker calls ``ray.train.report``; rank 0 writes the checkpoint.
"""

from __future__ import annotations

from mtl.train.checkpointing import evaluate_and_checkpoint
from mtl.train.step import train_step
from mtl.train.worker import set_up


def train_loop_per_worker(loop_config: dict) -> None:
    """Train on this worker's share of the data; ``loop_config`` holds the config, the task specs and
    where each task's data is (``mtl.train.data_plan.TaskData``)."""
    worker = set_up(loop_config)
    settings, state = worker.config.train, worker.state
    while state.epoch < settings.epochs and not state.stopped_early:
        steps = worker.mixer.steps(state.epoch)
        worker.module.train()
        while state.position < len(steps):
            end_of_epoch = train_step(worker, steps)
            if end_of_epoch is None:  # gradients accumulated, no optimizer step yet
                continue
            if end_of_epoch or (settings.eval_every_steps and state.step % settings.eval_every_steps == 0):
                evaluate_and_checkpoint(worker)
                worker.module.train()
            if end_of_epoch or state.stopped_early:
                break
