"""A worker's progress: rank 0's steps on the driver's progress bar and in the worker logs."""

from __future__ import annotations

import logging
import time

from mtl.train.state import TrainState

# note: Ray Train routes worker prints through logging and also tees them to stdout, so plain
# print() shows every line twice on the driver; logging shows it once
logger = logging.getLogger(__name__)


def _mean_losses(state: TrainState) -> dict[str, float]:
    """This rank's mean training loss per task since the last evaluation."""
    return {task: state.loss_sums[task] / state.loss_counts[task] for task in state.loss_sums}


class StepProgress:
    """Rank 0 posts each step to the driver's progress board (``mtl.runtime.progress``), when it has one, and
    logs step, loss per task, throughput and ETA every ``every`` steps (in Ray's worker logs)."""

    def __init__(self, *, rank: int, world_size: int, total_steps: int, every: int, board=None):
        self.rank, self.world_size, self.total_steps, self.every = rank, world_size, total_steps, every
        self.board = board if rank == 0 else None
        self.started, self.first_step, self.posted = time.perf_counter(), None, 0.0

    def log(self, state: TrainState, epochs: int) -> None:
        if self.first_step is None:
            self.first_step = state.step - 1
        rate = state.train_sentences * self.world_size / max(state.train_seconds, 1e-9)
        if self.board is not None and (time.perf_counter() - self.posted > 0.5 or state.step == self.total_steps):
            self.posted = time.perf_counter()
            self.board.set.remote(state.step, self.total_steps,
                                  f"epoch {state.epoch + 1}/{epochs}, {rate:.1f} sentences/s")
        if self.rank != 0 or (state.step % self.every and state.step != self.total_steps):
            return
        elapsed = time.perf_counter() - self.started
        eta = elapsed / (state.step - self.first_step) * (self.total_steps - state.step)
        losses = " ".join(f"{task} {value:.3f}" for task, value in _mean_losses(state).items())
        logger.info("[mtl] epoch %d/%d step %d/%d | loss %s | %.1f sentences/s | eta %.0fs",
                    state.epoch + 1, epochs, state.step, self.total_steps, losses, rate, eta)
