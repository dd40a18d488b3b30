"""The per-worker training loop: the only code that calls ``ray.train``.

Every worker runs ``train_loop_per_worker``: it builds the model, restores the last checkpoint
when there is one (a replaced worker, or a rerun with the same output), and follows the task
schedule of ``TaskMixer``, which is the same on every worker. Every worker evaluates (the models
are identical, so are the scores, so every worker takes the same early-stopping decision without
talking to the others) and every worker calls ``ray.train.report``; rank 0 writes the checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import ray.train
import ray.train.torch
import torch
from torch import nn

from mtl.checkpoint import (
    ModelBundle,
    build_model,
    load_model_folder,
    save_model_folder,
)
from mtl.config import Config
from mtl.data.mixing import TaskBatches, TaskMixer
from mtl.predict import Predictor
from mtl.tasks import TaskSpec
from mtl.train.evaluate import evaluate
from mtl.train.optim import (
    FreezingPlan,
    build_optimizer,
    build_scheduler,
    parameter_groups,
)
from mtl.train.weighting import LossWeighting

# note: Ray Train routes worker prints through logging and also tees them to stdout, so plain
# print() shows every line twice on the driver; logging shows it once
logger = logging.getLogger(__name__)

MODEL_DIR = "model"
STATE_FILE = "train_state.json"
OPTIMIZER_FILE = "optimizer.pt"


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
    train_seconds: float = 0.0   # time in forward, backward and optimizer steps (not eval, not checkpoints)
    train_sentences: int = 0     # sentences trained on by this worker
    history: list = field(default_factory=list)
    placements: list = field(default_factory=list)  # per (re)start: the Ray node id of each rank
    loss_sums: dict = field(default_factory=dict)
    loss_counts: dict = field(default_factory=dict)


class TrainingModule(nn.Module):
    """The model and the loss weighting in one module, so that DDP keeps both in sync."""

    def __init__(self, model: nn.Module, weighting: LossWeighting):
        super().__init__()
        self.model = model
        self.weighting = weighting

    def forward(self, task: str, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (the task's loss, the weighted loss to back-propagate)."""
        labels = batch.pop("labels")
        loss = self.model(**batch, tasks=[task], labels={task: labels}).losses[task]
        return loss, self.weighting(task, loss)


def train_loop_per_worker(loop_config: dict) -> None:
    """Train on this worker's shard; ``loop_config`` holds the config, task specs and eval rows."""
    config = Config.model_validate(loop_config["config"])
    settings = config.train
    specs = [TaskSpec.from_dict(spec) for spec in loop_config["specs"]]
    eval_rows = loop_config["eval_rows"]
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(settings.seed)
    device = ray.train.torch.get_device()

    bundle = build_model(config.model, specs)
    weighting = LossWeighting(strategy=settings.loss_weighting, tasks=[spec.name for spec in specs],
                              static_weights={task.name: task.weight for task in config.tasks},
                              dwa_temperature=settings.dwa_temperature)
    state, optimizer_state = _restore(bundle, weighting)
    freezing = FreezingPlan(settings)
    freezing.apply_static(bundle.model)

    batches = {spec.name: TaskBatches(examples=_load_shard(spec.name), batch_size=settings.batch_size,
                                      seed=settings.seed, task_index=index) for index, spec in enumerate(specs)}
    mixer = TaskMixer(batch_counts={task: source.batches_per_pass for task, source in batches.items()},
                      strategy=settings.mixing, temperature=settings.temperature, seed=settings.seed)
    steps_per_epoch = math.ceil(mixer.steps_per_epoch / settings.grad_accumulation)
    total_steps = steps_per_epoch * settings.epochs

    head_rates = {task.name: task.learning_rate for task in config.tasks if task.learning_rate}
    optimizer = build_optimizer(parameter_groups(bundle.model, weighting, settings, head_rates))
    scheduler = build_scheduler(optimizer, settings, total_steps)
    if optimizer_state:
        optimizer.load_state_dict(optimizer_state["optimizer"])
        scheduler.load_state_dict(optimizer_state["scheduler"])
    module = ray.train.torch.prepare_model(
        TrainingModule(bundle.model, weighting),
        # note: each step runs one task's head, so the other heads get no gradient that step
        parallel_strategy_kwargs={"find_unused_parameters": True},
    )
    state.placements.append(_worker_nodes(world_size))
    autocast = _autocast(settings.mixed_precision, device)
    progress = _Progress(rank=rank, world_size=world_size, total_steps=total_steps, every=settings.log_every_steps)

    while state.epoch < settings.epochs and not state.stopped_early:
        schedule = mixer.schedule(state.epoch)
        module.train()
        while state.position < len(schedule):
            started = time.perf_counter()
            task = schedule[state.position]
            draw = state.draws.get(task, 0)
            state.draws[task] = draw + 1
            batch = {name: tensor.to(device) for name, tensor in
                     bundle.featurizer.collate(batches[task].batch(draw)).items()}
            state.position += 1
            stepping = state.position % settings.grad_accumulation == 0 or state.position == len(schedule)
            sync = contextlib.nullcontext() if stepping or world_size == 1 else module.no_sync()
            with sync, autocast:
                loss, weighted = module(task, batch)
            with sync:
                (weighted / settings.grad_accumulation).backward()
            state.loss_sums[task] = state.loss_sums.get(task, 0.0) + loss.item()
            state.loss_counts[task] = state.loss_counts.get(task, 0) + 1
            state.train_sentences += len(batch["input_ids"])
            if not stepping:
                state.train_seconds += time.perf_counter() - started
                continue
            for parameter in freezing.still_frozen(bundle.model, state.step, state.epoch):
                parameter.grad = None
            if settings.grad_clip:
                torch.nn.utils.clip_grad_norm_(module.parameters(), settings.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.train_seconds += time.perf_counter() - started
            progress.log(state, settings.epochs)
            end_of_epoch = state.position == len(schedule)
            if end_of_epoch:
                state.epoch, state.position = state.epoch + 1, 0
                weighting.end_epoch(_mean_losses(state))
            if end_of_epoch or (settings.eval_every_steps and state.step % settings.eval_every_steps == 0):
                _evaluate_and_report(bundle, weighting, optimizer, scheduler, state, config, specs,
                                     eval_rows, device, rank)
                module.train()
            if end_of_epoch or state.stopped_early:
                break


def _worker_nodes(world_size: int) -> list[str]:
    """The Ray node id of every rank, so the job can report where its workers ran."""
    node = ray.get_runtime_context().get_node_id()
    if world_size == 1 or not torch.distributed.is_initialized():
        return [node]
    nodes: list[str | None] = [None] * world_size
    torch.distributed.all_gather_object(nodes, node)
    return nodes


def _load_shard(task: str) -> list[dict]:
    """This worker's share of the task's tokenized examples, as plain lists (fast to collate)."""
    shard = ray.train.get_dataset_shard(f"train_{task}")
    return [{name: value.tolist() if hasattr(value, "tolist") else value for name, value in row.items()}
            for row in shard.iter_rows()]


def _autocast(mode: str, device: torch.device):
    """bf16 autocast where asked, or on 'auto' where the GPU supports it; CPU stays in float32."""
    bf16_gpu = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if mode == "bf16" or (mode == "auto" and bf16_gpu):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _mean_losses(state: TrainState) -> dict[str, float]:
    return {task: state.loss_sums[task] / state.loss_counts[task] for task in state.loss_sums}


def _evaluate_and_report(bundle: ModelBundle, weighting: LossWeighting, optimizer, scheduler,
                         state: TrainState, config: Config, specs: list[TaskSpec], eval_rows: dict,
                         device, rank: int) -> None:
    """Evaluate, update early stopping, and report metrics with a checkpoint (written by rank 0)."""
    train_losses = _mean_losses(state)
    state.loss_sums, state.loss_counts = {}, {}
    if eval_rows:
        results = evaluate(Predictor(bundle, device=device, batch_size=config.train.eval_batch_size), eval_rows)
    else:  # no eval data: lower training loss is better
        results = {"tasks": {}, "combined": -sum(train_losses.values())}
    combined = results["combined"]
    if combined > state.best:
        state.best, state.evals_without_improvement = combined, 0
    else:
        state.evals_without_improvement += 1
    patience = config.train.patience
    state.stopped_early = bool(patience and state.evals_without_improvement >= patience
                               and state.epoch < config.train.epochs)
    state.history.append({"epoch": state.epoch, "step": state.step, "combined": combined,
                          "train_loss": train_losses, "weights": weighting.weights(),
                          "tasks": results["tasks"]})
    metrics = {"epoch": state.epoch, "step": state.step, "combined": combined,
               **{f"{task}/{name}": value for task, report in results["tasks"].items()
                  for name, value in report.items() if isinstance(value, (int, float))},
               **{f"{task}/train_loss": value for task, value in train_losses.items()}}
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if rank == 0:
            metadata = {"trained_at": datetime.now(timezone.utc).isoformat(), "epoch": state.epoch,
                        "step": state.step, "metrics": results, "config": config.model_dump()}
            save_model_folder(bundle, Path(folder) / MODEL_DIR, metadata=metadata)
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "weighting": weighting.state_dict()}, Path(folder) / OPTIMIZER_FILE)
            (Path(folder) / STATE_FILE).write_text(json.dumps(
                {"state": asdict(state), "weighting": weighting.state(), "specs": [s.to_dict() for s in specs]}))
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report(metrics, checkpoint=checkpoint)


def _restore(bundle: ModelBundle, weighting: LossWeighting) -> tuple[TrainState, dict | None]:
    """Load the last checkpoint's weights and state into a freshly built model, if there is one."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return TrainState(), None
    with checkpoint.as_directory() as folder:
        saved = load_model_folder(Path(folder) / MODEL_DIR)
        bundle.model.load_state_dict(saved.model.state_dict())
        stored = json.loads((Path(folder) / STATE_FILE).read_text())
        # weights_only: plain tensors and numbers, never arbitrary pickled objects
        optimizer_state = torch.load(Path(folder) / OPTIMIZER_FILE, weights_only=True, map_location="cpu")
    weighting.load_state_dict(optimizer_state["weighting"])
    weighting.restore(stored["weighting"])
    state = TrainState(**stored["state"])
    state.resumes += 1
    logger.info("[mtl] resumed from checkpoint: epoch %d, step %d", state.epoch, state.step)
    return state, optimizer_state


class _Progress:
    """Rank 0 prints step, loss per task, throughput and ETA every ``every`` steps."""

    def __init__(self, *, rank: int, world_size: int, total_steps: int, every: int):
        self.rank, self.world_size, self.total_steps, self.every = rank, world_size, total_steps, every
        self.started, self.first_step = time.perf_counter(), None

    def log(self, state: TrainState, epochs: int) -> None:
        if self.first_step is None:
            self.first_step = state.step - 1
        if self.rank != 0 or (state.step % self.every and state.step != self.total_steps):
            return
        elapsed = time.perf_counter() - self.started
        rate = state.train_sentences * self.world_size / max(state.train_seconds, 1e-9)
        eta = elapsed / (state.step - self.first_step) * (self.total_steps - state.step)
        losses = " ".join(f"{task} {value:.3f}" for task, value in _mean_losses(state).items())
        logger.info("[mtl] epoch %d/%d step %d/%d | loss %s | %.1f sentences/s | eta %.0fs",
                    state.epoch + 1, epochs, state.step, self.total_steps, losses, rate, eta)
