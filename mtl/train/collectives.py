"""What the ranks of a run exchange: every rank calls these with its own values and gets the same
answer, so that all take the same branch."""

from __future__ import annotations

import ray.train
import torch

from mtl.train.state import TrainState


def gather(value) -> list:
    """``value`` of every rank, in rank order (every rank must call this, and gets the same list)."""
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return [value]
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def mean_across_ranks(sums: dict[str, float], counts: dict[str, int]) -> dict[str, float]:
    """The mean per task over the losses of every rank, the same on every rank."""
    total_sums, total_counts = sum_across_ranks(sums, counts)
    return {task: total_sums[task] / total_counts[task] for task in total_sums}


def sum_across_ranks(sums: dict[str, float], counts: dict[str, int]) -> tuple[dict, dict]:
    total_sums, total_counts = {}, {}
    for rank_sums, rank_counts in gather((sums, counts)):
        for task, value in rank_sums.items():
            total_sums[task] = total_sums.get(task, 0.0) + value
            total_counts[task] = total_counts.get(task, 0) + rank_counts[task]
    return total_sums, total_counts


def hand_epoch_losses_to_rank_0(state: TrainState, rank: int) -> None:
    """Rank 0 alone writes checkpoints: it takes the epoch's loss totals of every rank (the others
    keep none), so that a resumed run's end-of-epoch DWA update sums what the first run's would."""
    totals = sum_across_ranks(state.epoch_loss_sums, state.epoch_loss_counts)
    state.epoch_loss_sums, state.epoch_loss_counts = totals if rank == 0 else ({}, {})


def worker_nodes(world_size: int) -> list[str]:
    """The Ray node id of every rank, so the job can report where its workers ran."""
    node = ray.get_runtime_context().get_node_id()
    if world_size == 1 or not torch.distributed.is_initialized():
        return [node]
    nodes: list[str | None] = [None] * world_size
    torch.distributed.all_gather_object(nodes, node)
    return nodes
