"""Gradient balancing within a step that holds a batch of every task: PCGrad and GradNorm.

Both need each task's gradient on its own, so such a step takes them one task at a time
(``torch.autograd.grad``) rather than from one backward pass of the summed loss. DDP's all-reduce
runs inside a backward pass, once per parameter, so it cannot average these: the step runs under
DDP's ``no_sync`` and ``average_gradients`` averages the finished gradients across ranks once,
before the optimizer steps (after the last micro-batch of a gradient accumulation).
"""

from __future__ import annotations

import numpy as np
import torch


def pcgrad(task_gradients: list[torch.Tensor], order: np.random.Generator) -> torch.Tensor:
    """PCGrad (Yu et al., 2020) on flat gradients of the shared parameters, one per task.

    Each task's gradient is projected onto the normal plane of every other task's (original)
    gradient it conflicts with (a negative dot product), taking the others in a random order; the
    result is the sum of the projected gradients.
    """
    projected = []
    for index, gradient in enumerate(task_gradients):
        gradient = gradient.clone()
        for other_index in order.permutation(len(task_gradients)).tolist():
            other = task_gradients[other_index]
            if other_index == index:
                continue
            dot = torch.dot(gradient, other)
            if dot < 0:
                gradient -= dot / torch.dot(other, other).clamp_min(1e-20) * other
        projected.append(gradient)
    return torch.stack(projected).sum(dim=0)


def pcgrad_backward(objectives: dict[str, torch.Tensor], shared: list[torch.nn.Parameter],
                    own: list[torch.nn.Parameter], order: np.random.Generator, scale: float) -> None:
    """Add ``scale`` times the PCGrad step's gradients to ``.grad``: the projected sum on ``shared``
    (the encoder), each task's plain gradient on ``own`` (heads and weighting, each task's own)."""
    shared_gradients = []
    for objective in objectives.values():
        gradients = torch.autograd.grad(objective, shared + own, retain_graph=True, allow_unused=True)
        shared_gradients.append(_flat(gradients[:len(shared)], shared))
        _accumulate(own, gradients[len(shared):], scale)
    combined = pcgrad(shared_gradients, order)
    _accumulate(shared, _unflat(combined, shared), scale)


def gradient_norm(loss: torch.Tensor, parameters: list[torch.nn.Parameter]) -> float:
    """The L2 norm of ``loss``'s gradient on ``parameters`` (GradNorm's shared layer); the graph is kept."""
    gradients = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
    squares = [(gradient.float() ** 2).sum() for gradient in gradients if gradient is not None]
    return float(torch.stack(squares).sum().sqrt()) if squares else 0.0  # none: a head-only step


def average_gradients(parameters: list[torch.nn.Parameter], world_size: int) -> None:
    """Every gradient, averaged across the ranks in one all-reduce. Every rank runs every task's
    batch through the same parameters, so the same parameters have a gradient on every rank."""
    if world_size == 1:
        return
    trainable = [parameter for parameter in parameters if parameter.grad is not None]
    flat = _flat([parameter.grad for parameter in trainable], trainable)
    torch.distributed.all_reduce(flat)
    _assign(trainable, _unflat(flat / world_size, trainable))


def _flat(gradients, parameters: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([(gradient if gradient is not None else torch.zeros_like(parameter)).reshape(-1)
                      for gradient, parameter in zip(gradients, parameters)])


def _unflat(flat: torch.Tensor, parameters: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    pieces = torch.split(flat, [parameter.numel() for parameter in parameters])
    return [piece.view_as(parameter) for piece, parameter in zip(pieces, parameters)]


def _accumulate(parameters: list[torch.nn.Parameter], gradients, scale: float) -> None:
    for parameter, gradient in zip(parameters, gradients):
        if gradient is None:
            continue
        if parameter.grad is None:
            parameter.grad = gradient * scale
        else:
            parameter.grad += gradient * scale


def _assign(parameters: list[torch.nn.Parameter], gradients: list[torch.Tensor]) -> None:
    for parameter, gradient in zip(parameters, gradients):
        parameter.grad = gradient.clone()
