"""One training step of a worker: forward and backward on the step's batches, gradient balancing,
and the optimizer step once the gradient accumulation is complete."""

from __future__ import annotations

import contextlib
import time

import numpy as np
import torch

from mtl.config import EMBEDDING_METRICS
from mtl.errors import ConfigError
from mtl.model.freezing import encoder_layers
from mtl.train.collectives import mean_across_ranks
from mtl.train.device import autocast, private_rss
from mtl.train.gradients import average_gradients, gradient_norm, pcgrad_backward
from mtl.train.state import TrainState
from mtl.train.worker import Worker

# loss weightings that combine the tasks' gradients of a step themselves (mtl.train.gradients)
GRADIENT_BALANCING = ("gradnorm", "pcgrad")


def train_step(worker: Worker, steps: list[tuple[str, ...]]) -> bool | None:
    """Forward and backward on the next step's batches (one task's, or one of every task), and an
    optimizer step when the gradient accumulation is complete. Returns None when no step was taken,
    else whether the epoch ended."""
    settings, state = worker.config.train, worker.state
    started = time.perf_counter()
    batches = {}
    for task in steps[state.position]:
        state.draws[task] = state.draws.get(task, 0) + 1
        batches[task] = {name: tensor.to(worker.device) for name, tensor in
                         worker.bundle.featurizer.collate(worker.streams[task].next_batch()).items()}
        if worker.teacher is not None and worker.streams[task].spec.has_head:
            with autocast(settings.mixed_precision, worker.device):
                worker.teacher.annotate(task, batches[task], worker.bundle.featurizer.input_names)
    sentences = sum(len(batch["input_ids"]) for batch in batches.values())
    state.position += 1
    stepping = state.position % settings.grad_accumulation == 0 or state.position == len(steps)
    balancing = settings.loss_weighting in GRADIENT_BALANCING
    synced = stepping and not balancing  # balancing averages the gradients itself, once they are whole
    sync = contextlib.nullcontext() if synced or worker.world_size == 1 else worker.module.no_sync()
    with sync:  # one block: DDP's no_sync() can be entered only once
        with autocast(settings.mixed_precision, worker.device):
            losses, objectives, preservations = worker.module(batches, head_only=_head_only(worker))
        _backward(worker, losses, objectives)
    _add_losses(state, {task: loss.item() for task, loss in losses.items()},
                {task: loss.item() for task, loss in preservations.items()})
    state.train_sentences += sentences
    if stepping:
        if balancing:
            average_gradients(list(worker.module.parameters()), worker.world_size)
        _optimizer_step(worker)
    state.train_seconds += time.perf_counter() - started
    if worker.allreduce_clock:
        state.allreduce_seconds += worker.allreduce_clock.take()
    state.peak_worker_private_rss = max(state.peak_worker_private_rss, private_rss())
    if not stepping:
        return None
    worker.progress.log(state, settings.epochs)
    end_of_epoch = state.position == len(steps)
    if end_of_epoch:
        state.epoch, state.position = state.epoch + 1, 0
        # every rank must take the same weights: from the losses of all ranks, not its own
        worker.checkpointed.weighting.end_epoch(mean_across_ranks(state.epoch_loss_sums, state.epoch_loss_counts))
        state.epoch_loss_sums, state.epoch_loss_counts = {}, {}
    return end_of_epoch


def _head_only(worker: Worker) -> frozenset[str]:
    """The tasks whose batches still train only their heads (``head_only_steps``)."""
    return frozenset(task.name for task in worker.config.tasks if worker.state.step < task.head_only_steps)


def _backward(worker: Worker, losses: dict[str, torch.Tensor], objectives: dict[str, torch.Tensor]) -> None:
    """The step's gradients, added to ``.grad``: PCGrad's projected sum, or the summed objectives'
    (after GradNorm's weight gradient, taken from the same graph)."""
    settings, state = worker.config.train, worker.state
    scale = 1 / settings.grad_accumulation
    model, weighting = worker.bundle.model, worker.checkpointed.weighting
    if settings.loss_weighting == "pcgrad":
        shared = [parameter for parameter in model.encoder.parameters() if parameter.requires_grad]
        own = [parameter for module in (model.heads, weighting) for parameter in module.parameters()
               if parameter.requires_grad]
        order = np.random.default_rng([settings.seed, state.epoch, state.position, worker.rank])
        pcgrad_backward(objectives, shared, own, order, scale)
        return
    if settings.loss_weighting == "gradnorm":
        _add_gradnorm_gradient(worker, losses, scale)
    (sum(objectives.values()) * scale).backward()


def _add_gradnorm_gradient(worker: Worker, losses: dict[str, torch.Tensor], scale: float) -> None:
    """GradNorm's gradient for the task weights, from each task's gradient norm on the top encoder layer."""
    weighting = worker.checkpointed.weighting
    values = {task: loss.item() for task, loss in losses.items()}
    if not weighting.initial_losses.all():  # the same on every rank: set once, and restored from checkpoints
        weighting.start_gradnorm(mean_across_ranks(values, dict.fromkeys(values, 1)))
    shared_layer = [parameter for parameter in encoder_layers(worker.bundle.model)[-1].parameters()
                    if parameter.requires_grad]
    if not shared_layer:
        raise ConfigError("config error: train.loss_weighting: gradnorm measures gradients on the top encoder "
                          "layer, which is frozen (train.freeze)")
    norms = {task: gradient_norm(loss, shared_layer) for task, loss in losses.items()}
    gradient = weighting.gradnorm_gradient(values, norms) * scale
    weights = weighting.task_weights
    weights.grad = gradient if weights.grad is None else weights.grad + gradient


def _add_losses(state: TrainState, losses: dict[str, float], preservations: dict[str, float]) -> None:
    """The step's losses into the sums logged at the next evaluation and used by DWA at the epoch's end;
    the preservation loss is logged beside the tasks' (loss weighting never sees it)."""
    for sums, counts in ((state.loss_sums, state.loss_counts), (state.epoch_loss_sums, state.epoch_loss_counts)):
        for task, loss in losses.items():
            sums[task] = sums.get(task, 0.0) + loss
            counts[task] = counts.get(task, 0) + 1
    for loss in preservations.values():
        state.loss_sums[EMBEDDING_METRICS] = state.loss_sums.get(EMBEDDING_METRICS, 0.0) + loss
        state.loss_counts[EMBEDDING_METRICS] = state.loss_counts.get(EMBEDDING_METRICS, 0) + 1


def _optimizer_step(worker: Worker) -> None:
    run, state = worker.checkpointed, worker.state
    for parameter in worker.freezing.still_frozen(worker.bundle.model, state.step, state.epoch):
        parameter.grad = None
    if worker.config.train.grad_clip:
        torch.nn.utils.clip_grad_norm_(worker.module.parameters(), worker.config.train.grad_clip)
    run.optimizer.step()
    run.weighting.renormalize()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    state.step += 1
