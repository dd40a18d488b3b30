"""The jobs' own progress line, in place of Ray's logs and Ray Data's progress bars.

Work runs in Ray workers and actors, whose output ``jobs.train`` and ``jobs.label`` keep out of the
terminal by default (it still goes to Ray's log files). So the workers post their progress to a
``ProgressBoard`` actor, and the driver draws one bar from it: steps or rows, their rate, the ETA.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

POLL_SECONDS = 0.5
LOG_SECONDS = 30


@ray.remote(num_cpus=0)
class ProgressBoard:
    """Where workers post progress: ``done`` and ``total`` units, and a few words for the bar."""

    def __init__(self):
        self.done, self.total, self.note = 0, None, ""

    def set(self, done: int, total: int | None = None, note: str = "") -> None:
        self.done, self.total, self.note = done, total if total is not None else self.total, note

    def add(self, count: int) -> None:
        self.done += count

    def read(self) -> tuple[int, int | None, str]:
        return self.done, self.total, self.note


class RowCounter:
    """Posts rows done to the board named ``board``, from any process (a labeler actor calls it after
    each batch). It holds the board's name and looks the actor up on first use, so that the
    labeler's constructor arguments stay plain data."""

    def __init__(self, board: str):
        self.board, self._handle = board, None

    def __call__(self, rows: int) -> None:
        if self._handle is None:
            self._handle = ray.get_actor(self.board)
        self._handle.add.remote(rows)


@dataclass(frozen=True)
class Progress:
    """A board being drawn: its handle (for workers given it) and its actor name (for actors that
    look it up themselves, ``RowCounter``)."""

    board: object
    name: str


@contextmanager
def progress_bar(description: str, unit: str, *, total: int | None = None, enabled: bool = True):
    """Yield a ``Progress`` (None when ``enabled`` is false) while a thread draws its board as a tqdm
    bar on stderr."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    name = f"mtl-progress-{uuid.uuid4().hex}"
    # on this node: a cluster that loses another node (and recovers) keeps its bar
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    board = ProgressBoard.options(name=name, scheduling_strategy=here).remote()
    if total is not None:
        board.set.remote(0, total)
    # in a log file (no terminal) every redraw is kept: redraw rarely there
    interval = POLL_SECONDS if sys.stderr.isatty() else LOG_SECONDS
    bar = tqdm(desc=description, unit=unit, total=total, file=sys.stderr, dynamic_ncols=True, mininterval=interval)
    stop = threading.Event()

    def draw() -> None:
        try:
            done, expected, note = ray.get(board.read.remote(), timeout=10)
        except (ray.exceptions.RayError, TimeoutError):   # a bar never fails the job it draws
            return
        if expected is not None and expected != bar.total:
            bar.total = max(expected, done)
        bar.set_postfix_str(note, refresh=False)
        bar.update(done - bar.n)

    def follow() -> None:
        while not stop.wait(POLL_SECONDS):
            draw()

    thread = threading.Thread(target=follow, daemon=True, name="progress")
    thread.start()
    try:
        yield Progress(board, name)
    finally:
        stop.set()
        thread.join()
        draw()
        bar.close()
        ray.kill(board, no_restart=True)


def quiet_output(verbose: bool) -> dict:
    """``ray.init`` arguments, and Ray Data and MLflow settings, that keep Ray's own logs, its
    progress bars and MLflow's notes out of the terminal unless ``verbose`` (Ray's still go to its
    log files)."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = verbose
    context.print_on_execution_start = verbose
    if not verbose:
        # Ray Data's hints about its own tuning, and its note that the bars are off
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")   # read when mlflow is imported
        logging.getLogger("alembic").setLevel(logging.WARNING)      # its store's schema migrations
    return {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.ERROR}
