"""Where a training run is, and what its checkpoints hold: written and read back by ``RunState``.

A checkpoint folder::

    model/              the model folder (what jobs.label and serve load)
    progress.json       TrainState: where the run is (epoch, schedule position, draws, history)
    trainer_state.pt    the optimizer, the learning-rate schedule and the loss weighting
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mtl.inference.model_folder import ModelBundle, load_model_folder, save_model_folder
from mtl.tasks import TaskSpec
from mtl.train.weighting import LossWeighting

MODEL_DIR = "model"
STATE_FILE = "progress.json"
TRAINER_STATE_FILE = "trainer_state.pt"


@dataclass
class TrainState:
    """Where the run is; saved with every checkpoint so that a resumed run continues the schedule."""

    epoch: int = 0          # epochs finished
    position: int = 0       # batches of the current epoch's schedule already trained on
    step: int = 0           # optimizer steps taken
    draws: dict = field(default_factory=dict)  # batches drawn so far from each task
    best: float = -math.inf
    evals_without_improvement: int = 0
    stopped_early: bool = False
    resumes: int = 0        # times this run restarted from a checkpoint (lost worker, rerun)
    peak_worker_rss: int = 0  # the largest resident memory of any worker so far, in bytes
    peak_worker_private_rss: int = 0  # ... less shared memory (object-store pages), sampled every step
    train_seconds: float = 0.0   # time in forward, backward and optimizer steps (not eval, not checkpoints)
    train_sentences: int = 0     # sentences trained on by this worker
    allreduce_seconds: float = 0.0   # of train_seconds, with a gradient all-reduce in flight (several workers)
    history: list = field(default_factory=list)
    placements: list = field(default_factory=list)  # per (re)start: the Ray node id of each rank
    devices: list = field(default_factory=list)     # per (re)start: rank 0's device and arithmetic
    loss_sums: dict = field(default_factory=dict)     # this rank's training losses since the last evaluation
    loss_counts: dict = field(default_factory=dict)
    epoch_loss_sums: dict = field(default_factory=dict)   # ... and since the epoch began (for DWA)
    epoch_loss_counts: dict = field(default_factory=dict)


def read_progress(folder: Path) -> TrainState:
    """The TrainState of a checkpoint folder (a field the checkpoint predates gets its default)."""
    return TrainState(**json.loads((folder / STATE_FILE).read_text())["state"])


@dataclass
class RunState:
    """Everything a checkpoint holds, as live objects that save themselves to a folder and load
    themselves back from one."""

    bundle: ModelBundle
    weighting: LossWeighting
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    progress: TrainState

    def save(self, folder: Path, *, specs: list[TaskSpec], metadata: dict, random_states: list[dict]) -> None:
        """Write the checkpoint; ``random_states`` holds each rank's ``random_state()``."""
        save_model_folder(self.bundle, folder / MODEL_DIR, metadata=metadata)
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "weighting": self.weighting.state_dict(), "random_states": random_states},
                   folder / TRAINER_STATE_FILE)
        (folder / STATE_FILE).write_text(json.dumps({"state": asdict(self.progress),
                                                     "specs": [spec.to_dict() for spec in specs]}))

    def load(self, folder: Path) -> list[dict]:
        """Load a checkpoint folder into these objects, as a resumed run, and return each rank's
        random state. The model must already be on its device: ``Optimizer.load_state_dict`` puts
        each state on its parameter's device."""
        self.bundle.model.load_state_dict(load_model_folder(folder / MODEL_DIR).model.state_dict())
        # weights_only: plain tensors and numbers, never arbitrary pickled objects
        trainer_state = torch.load(folder / TRAINER_STATE_FILE, weights_only=True, map_location="cpu")
        self.weighting.load_state_dict(trainer_state["weighting"])
        self.optimizer.load_state_dict(trainer_state["optimizer"])
        self.scheduler.load_state_dict(trainer_state["scheduler"])
        self.progress = read_progress(folder)
        self.progress.resumes += 1
        return trainer_state.get("random_states", [])


def random_state() -> dict:
    """This process's torch random state (dropout draws from it), CPU and current GPU."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_random_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
