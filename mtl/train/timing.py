"""Where a worker's step time goes: the gradient all-reduce against everything else."""

from __future__ import annotations

import threading
import time

from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel


class AllReduceClock:
    """Wall time during which at least one of DDP's gradient all-reduces is in flight.

    It is DDP's communication hook: it runs DDP's default all-reduce of each gradient bucket and
    times it from the hook's call to its completion; buckets in flight together count once. The
    all-reduce overlaps the rest of backward, so the time outside it is compute (and data) alone,
    and the time inside is communication, with or without compute beside it.
    """

    def __init__(self):
        self._seconds = 0.0
        self._in_flight = 0
        self._since = 0.0
        self._lock = threading.Lock()  # completions arrive on the process group's threads

    @classmethod
    def attach(cls, module: nn.Module) -> AllReduceClock | None:
        """A clock on ``module``'s all-reduces; None when it is not a DDP module (one worker)."""
        if not isinstance(module, DistributedDataParallel):
            return None
        clock = cls()
        module.register_comm_hook(None, clock._hook)
        return clock

    def take(self) -> float:
        """Seconds of all-reduce since the last call."""
        with self._lock:
            seconds, self._seconds = self._seconds, 0.0
        return seconds

    def _hook(self, process_group, bucket):
        with self._lock:
            if not self._in_flight:
                self._since = time.perf_counter()
            self._in_flight += 1
        return default_hooks.allreduce_hook(process_group, bucket).then(self._done)

    def _done(self, future):
        with self._lock:
            self._in_flight -= 1
            if not self._in_flight:
                self._seconds += time.perf_counter() - self._since
        return future.value()
