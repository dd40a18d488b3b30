"""Task mixing: which task each training batch comes from, and which examples it holds.

Every batch holds examples of one task. An epoch is as many batches as all tasks' data fill once;
the strategy decides how those steps are shared out:

- ``proportional``: each task gets exactly its own number of batches, in shuffled order;
- ``temperature``: task i gets a share proportional to ``n_i ** (1 / T)`` (T=1 is proportional,
  large T tends to uniform), so small tasks are seen more often than their size alone allows;
- ``round_robin``: tasks take turns, one batch each;
- ``all_tasks``: every step takes one batch of every task (what gradient balancing needs: GradNorm
  and PCGrad compare the tasks' gradients within a step). An epoch is as many steps as the largest
  task has batches; a smaller task starts its next pass when it runs out.

Everything is a pure function of ``(seed, epoch, draw count)``, so all workers follow the same
schedule, and a run resumed from a checkpoint continues it exactly where it stopped.
"""

from __future__ import annotations

import numpy as np


class TaskMixer:
    """The per-epoch order of tasks, given each task's number of batches."""

    def __init__(self, *, batch_counts: dict[str, int], strategy: str = "proportional",
                 temperature: float = 2.0, seed: int = 0):
        if strategy not in ("proportional", "temperature", "round_robin", "all_tasks"):
            raise ValueError(f"unknown mixing strategy {strategy!r}")
        empty = [task for task, count in batch_counts.items() if count < 1]
        if empty:
            raise ValueError(f"tasks with no training batches: {empty}")
        self.batch_counts = dict(batch_counts)
        self.strategy = strategy
        self.temperature = temperature
        self.seed = seed

    @property
    def steps_per_epoch(self) -> int:
        """Training steps (forward passes of one batch, or of one batch per task) in an epoch."""
        if self.strategy == "all_tasks":
            return max(self.batch_counts.values())
        return sum(self.batch_counts.values())

    def steps(self, epoch: int) -> list[tuple[str, ...]]:
        """The tasks of every step of ``epoch``: one task each, or every task with ``all_tasks``."""
        if self.strategy == "all_tasks":
            return [tuple(self.batch_counts)] * self.steps_per_epoch
        return [(task,) for task in self.schedule(epoch)]

    def shares(self) -> dict[str, int]:
        """How many batches each task gets in one epoch (every task at least one)."""
        tasks = list(self.batch_counts)
        if self.strategy == "proportional":
            return dict(self.batch_counts)
        if self.strategy == "round_robin":
            weights = np.ones(len(tasks))
        else:
            weights = np.array([self.batch_counts[task] for task in tasks], dtype=float) ** (1 / self.temperature)
        exact = weights / weights.sum() * self.steps_per_epoch
        counts = np.maximum(np.floor(exact).astype(int), 1)
        # hand the rounding remainder to the largest fractional parts (largest remainder method);
        # a tiny task lifted to its one batch can make the epoch a step or two longer instead
        remainder = max(0, self.steps_per_epoch - int(counts.sum()))
        for index in np.argsort(-(exact - np.floor(exact)))[:remainder]:
            counts[index] += 1
        return dict(zip(tasks, counts.tolist()))

    def schedule(self, epoch: int) -> list[str]:
        """The task of every batch of ``epoch``, the same on every worker (one-task strategies)."""
        shares = self.shares()
        if self.strategy == "round_robin":
            order, remaining = [], dict(shares)
            while any(remaining.values()):
                for task in shares:
                    if remaining[task]:
                        order.append(task)
                        remaining[task] -= 1
            return order
        order = [task for task, count in shares.items() for _ in range(count)]
        rng = np.random.default_rng([self.seed, epoch])
        return [order[index] for index in rng.permutation(len(order))]
