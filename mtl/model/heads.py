"""Task heads: LayerNorm, dropout and a linear layer over the last dimension.

One module serves both kinds, because the computation is the same: a classification head reads
the pooled sentence vector ``(batch, hidden)``, a tagging head reads every token vector
``(batch, seq, hidden)``. The loss is computed only when labels are given.
"""

from __future__ import annotations

import torch
from torch import nn

from mtl.data.features import IGNORE_INDEX


class Head(nn.Module):
    """``(..., hidden)`` -> logits ``(..., num_labels)``."""

    def __init__(self, *, hidden_size: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.norm(features)))


def head_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over labeled positions; ``IGNORE_INDEX`` positions (later subwords,
    special tokens, padding) do not count. A batch with no labeled position gives 0, not NaN."""
    flat_labels = labels.reshape(-1)
    if not (flat_labels != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    return nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), flat_labels, ignore_index=IGNORE_INDEX
    )
