"""Loss weighting across tasks: static weights, uncertainty weighting, dynamic weight averaging,
GradNorm, and the static weights PCGrad projects (``mtl.train.gradients``).

A weighting turns each task's loss into the loss to back-propagate. The weighting is a module:
uncertainty weighting and GradNorm learn their parameters with the model (and are wrapped by DDP
with it, so every worker keeps the same values).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class LossWeighting(nn.Module):
    """Weights task losses.

    - ``static``: a fixed weight per task (``tasks[i].weight`` in the config).
    - ``uncertainty`` (Kendall, Gal and Cipolla, 2018): learns a log-variance ``s = log sigma^2`` per
      task and uses the paper's form for a classification likelihood (every task here is a softmax
      cross-entropy), ``exp(-s) * loss + s / 2``, so noisy or hard tasks are down-weighted
      automatically; at the optimum ``exp(-s) = 1 / (2 * loss)``.
    - ``dwa``, dynamic weight averaging (Liu, Johns and Davison, 2019): after each epoch, a task
      whose loss fell slowly gets more weight: ``w_i = K * softmax(r_i / T)``, with ``r_i`` the
      ratio of its last two epoch losses. The first two epochs use weight 1.
    - ``gradnorm`` (Chen et al., 2018): a learned weight per task, moved so that each task's
      weighted gradient norm on the top encoder layer tends to the mean norm times the task's
      relative training rate to the power ``alpha``; the weights always sum to the number of tasks.
      Their gradient comes from ``gradnorm_gradient`` alone, never from the tasks' losses.
    - ``pcgrad``: the static weights; the projection is done on the gradients (``mtl.train.gradients``).
    """

    def __init__(self, *, strategy: str, tasks: list[str], static_weights: dict[str, float] | None = None,
                 dwa_temperature: float = 2.0, gradnorm_alpha: float = 1.5):
        super().__init__()
        if strategy not in ("static", "uncertainty", "dwa", "gradnorm", "pcgrad"):
            raise ValueError(f"unknown loss weighting {strategy!r}")
        self.strategy = strategy
        self.tasks = list(tasks)
        self.static_weights = {task: (static_weights or {}).get(task, 1.0) for task in tasks}
        self.dwa_temperature = dwa_temperature
        self.dwa_weights = {task: 1.0 for task in tasks}
        self.epoch_losses: list[dict[str, float]] = []
        self.gradnorm_alpha = gradnorm_alpha
        if strategy == "uncertainty":
            self.log_variances = nn.Parameter(torch.zeros(len(tasks)))
        if strategy == "gradnorm":
            self.task_weights = nn.Parameter(torch.ones(len(tasks)))
            # each task's first training loss, the yardstick of its training rate (0: not seen yet)
            self.register_buffer("initial_losses", torch.zeros(len(tasks)))

    def forward(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        """The weighted loss of one task's batch."""
        if self.strategy == "uncertainty":
            log_variance = self.log_variances[self.tasks.index(task)]
            return torch.exp(-log_variance) * loss + log_variance / 2
        if self.strategy == "gradnorm":
            return self.task_weights[self.tasks.index(task)].detach() * loss
        if self.strategy == "dwa":
            return self.dwa_weights[task] * loss
        return self.static_weights[task] * loss

    def weights(self) -> dict[str, float]:
        """The current effective weight of each task, for logging."""
        if self.strategy == "uncertainty":
            return {task: math.exp(-value) for task, value in zip(self.tasks, self.log_variances.tolist())}
        if self.strategy == "gradnorm":
            return dict(zip(self.tasks, self.task_weights.tolist()))
        return dict(self.dwa_weights if self.strategy == "dwa" else self.static_weights)

    def gradnorm_gradient(self, losses: dict[str, float], norms: dict[str, float]) -> torch.Tensor:
        """GradNorm's gradient for the task weights, from each task's loss this step and the norm of
        its (unweighted) loss's gradient on the shared layer. The target of each weighted norm,
        ``mean(w_j * norm_j) * r_i ** alpha`` with ``r_i`` the task's loss ratio to its first loss
        over the mean ratio, is held constant, as in the paper: the gradient of the L1 distance is
        ``sign(w_i * norm_i - target_i) * norm_i``."""
        if not self.initial_losses.all():
            raise RuntimeError("GradNorm: the first losses are not recorded (call start_gradnorm first)")
        loss = torch.tensor([losses[task] for task in self.tasks])
        norm = torch.tensor([norms[task] for task in self.tasks])
        weighted = self.task_weights.detach().cpu() * norm
        ratio = loss / self.initial_losses.cpu()
        target = weighted.mean() * (ratio / ratio.mean()) ** self.gradnorm_alpha
        return (torch.sign(weighted - target) * norm).to(self.task_weights.device)

    def start_gradnorm(self, losses: dict[str, float]) -> None:
        """Record the first losses (the same on every rank: pass the mean across ranks)."""
        if not self.initial_losses.all():
            self.initial_losses.copy_(torch.tensor([losses[task] for task in self.tasks]))

    @torch.no_grad()
    def renormalize(self) -> None:
        """After an optimizer step: weights stay positive and sum to the number of tasks."""
        if self.strategy == "gradnorm":
            weights = self.task_weights.clamp_min(1e-3)
            self.task_weights.copy_(weights * len(self.tasks) / weights.sum())

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        """Record an epoch's mean loss per task; DWA updates its weights from the last two."""
        self.epoch_losses.append({task: mean_losses.get(task, 0.0) for task in self.tasks})
        if self.strategy != "dwa" or len(self.epoch_losses) < 2:
            return
        previous, latest = self.epoch_losses[-2], self.epoch_losses[-1]
        ratios = torch.tensor([latest[task] / previous[task] if previous[task] else 1.0 for task in self.tasks])
        weights = len(self.tasks) * torch.softmax(ratios / self.dwa_temperature, dim=0)
        self.dwa_weights = dict(zip(self.tasks, weights.tolist()))

    def get_extra_state(self) -> dict:
        """The DWA history, kept in ``state_dict()`` beside the learned parameters."""
        return copy.deepcopy({"epoch_losses": self.epoch_losses, "dwa_weights": self.dwa_weights})

    def set_extra_state(self, state: dict) -> None:
        self.epoch_losses = copy.deepcopy(state["epoch_losses"])
        self.dwa_weights = dict(state["dwa_weights"])
