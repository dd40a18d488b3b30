"""Optimizer, learning-rate schedule and freezing plan for multi-task fine-tuning.

- AdamW with weight decay on weight matrices only (not on biases and LayerNorm weights);
- one learning rate for the encoder, decayed layer by layer towards the embeddings when
  ``layer_decay < 1``, and one per head (the task's own, or ``head_learning_rate``);
- linear warm-up, then linear or cosine decay (``transformers.get_scheduler``), or cyclical rates:
  triangular (Smith, 2017) and cosine with warm restarts (Loshchilov and Hutter, 2017);
- freezing: the encoder, its embeddings or its lowest k layers for the whole run
  (``requires_grad=False``, which also saves their backward pass), and gradual unfreezing (the
  top layer first, one more every N steps or epochs).

Gradual unfreezing drops the gradients of the layers still frozen instead of flipping
``requires_grad``: DDP fixes the set of parameters it synchronizes when it wraps the model, and a
parameter that starts training later must be in that set from the start.
"""

from __future__ import annotations

import functools
import math
import re

import torch
from transformers import get_scheduler

from mtl.config import TrainConfig
from mtl.errors import ConfigError
from mtl.model.freezing import (
    encoder_embeddings,
    encoder_layers,
    freeze_embeddings,
    freeze_encoder,
    freeze_lowest_layers,
)
from mtl.model.multitask import MultiTaskModel

_LAYER_INDEX = re.compile(r"(?:^|\.)layers?\.(\d+)\.")
_SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


def _no_decay(name: str, parameter: torch.nn.Parameter) -> bool:
    return parameter.ndim < 2 or "norm" in name.lower()


def encoder_depth(name: str, num_layers: int) -> int:
    """0 for the embeddings, i+1 for layer i, ``num_layers`` for anything above the layers."""
    if "embeddings" in name:
        return 0
    match = _LAYER_INDEX.search(name)
    return int(match.group(1)) + 1 if match else num_layers


def parameter_groups(model: MultiTaskModel, extra: torch.nn.Module, config: TrainConfig,
                     head_learning_rates: dict[str, float]) -> list[dict]:
    """AdamW groups: one per (learning rate, decay or not); ``extra`` holds loss-weighting parameters."""
    num_layers = len(encoder_layers(model))
    grouped: dict[tuple[float, bool], list] = {}

    def add(parameter, learning_rate, name):
        grouped.setdefault((learning_rate, not _no_decay(name, parameter)), []).append(parameter)

    for name, parameter in model.encoder.named_parameters():
        depth = encoder_depth(name, num_layers)
        add(parameter, config.learning_rate * config.layer_decay ** (num_layers - depth), name)
    for task, head in model.heads.items():
        for name, parameter in head.named_parameters():
            add(parameter, head_learning_rates.get(task, config.head_learning_rate), name)
    extra_rate = config.gradnorm_learning_rate if config.loss_weighting == "gradnorm" else config.head_learning_rate
    for parameter in extra.parameters():
        grouped.setdefault((extra_rate, False), []).append(parameter)
    return [{"params": params, "lr": lr, "weight_decay": config.weight_decay if decay else 0.0}
            for (lr, decay), params in grouped.items()]


def build_optimizer(groups: list[dict]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int):
    """Warm-up (``warmup_steps``, else ``warmup_ratio`` of all optimizer steps), then the decay or the cycles."""
    warmup = config.warmup_steps if config.warmup_steps is not None else int(config.warmup_ratio * total_steps)
    warmup = min(warmup, total_steps)
    if config.schedule in _SCHEDULES:
        return get_scheduler(_SCHEDULES[config.schedule], optimizer, num_warmup_steps=warmup,
                             num_training_steps=total_steps)
    factor = functools.partial(cyclical_factor, shape=config.schedule, warmup=warmup, total=total_steps,
                               cycles=config.cycles, min_ratio=config.cycle_min_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def cyclical_factor(step: int, *, shape: str, warmup: int, total: int, cycles: int, min_ratio: float) -> float:
    """The share of its peak rate a parameter group gets at ``step`` of a cyclical schedule.

    After a linear warm-up, ``cosine_restarts`` runs ``cycles`` cosine decays from the peak to
    ``min_ratio`` of it, each restarting at the peak. ``triangular`` falls linearly to the floor and
    climbs back ``cycles`` times; the run ends at the floor of its last fall (``2 * cycles - 1``
    equal segments), so the last model is not trained at the peak rate.
    """
    if step < warmup:
        return step / warmup
    progress = min((step - warmup) / max(1, total - warmup), 1.0)
    if shape == "cosine_restarts":
        phase = 1.0 if progress == 1.0 else progress * cycles % 1.0
        height = 0.5 * (1 + math.cos(math.pi * phase))
    elif shape == "triangular":
        segments = 2 * cycles - 1
        segment = min(int(progress * segments), segments - 1)
        within = progress * segments - segment
        height = 1 - within if segment % 2 == 0 else within
    else:
        raise ValueError(f"unknown cyclical schedule {shape!r}")
    return min_ratio + (1 - min_ratio) * height


class FreezingPlan:
    """Which encoder parameters are frozen, for the whole run or until gradual unfreezing reaches them."""

    def __init__(self, config: TrainConfig):
        if config.gradual_unfreezing and config.freeze == "encoder":
            raise ConfigError("config error: train.gradual_unfreezing: cannot unfreeze a frozen encoder "
                              "(train.freeze is 'encoder')")
        self.config = config

    def apply_static(self, model: MultiTaskModel) -> None:
        """Freeze what stays frozen all run; call before wrapping the model in DDP."""
        if self.config.freeze == "encoder":
            freeze_encoder(model)
        elif self.config.freeze == "embeddings":
            freeze_embeddings(model)
        if self.config.freeze_layers:
            freeze_lowest_layers(model, self.config.freeze_layers)

    def unfrozen_layers(self, steps_done: int, epochs_done: int) -> int | None:
        """How many top layers gradual unfreezing has released (None: no gradual unfreezing)."""
        plan = self.config.gradual_unfreezing
        if plan is None:
            return None
        units = steps_done if plan.unit == "steps" else epochs_done
        return units // plan.every

    def still_frozen(self, model: MultiTaskModel, steps_done: int, epochs_done: int) -> list[torch.nn.Parameter]:
        """The parameters whose gradients gradual unfreezing drops at this point of the run."""
        released = self.unfrozen_layers(steps_done, epochs_done)
        if released is None:
            return []
        layers = encoder_layers(model)
        frozen_modules = list(layers[: max(0, len(layers) - released)])
        if released <= len(layers):
            frozen_modules.append(encoder_embeddings(model))
        return [parameter for module in frozen_modules for parameter in module.parameters()]
