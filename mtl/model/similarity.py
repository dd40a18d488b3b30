"""The losses of similarity tasks and of embedding preservation, on sentence embeddings.

- scored pairs: CoSENT (Su, 2022; sentence-transformers' ``CoSENTLoss``): every pair of pairs whose
  gold scores are ordered should have cosines ordered the same way; a log-sum-exp over the
  violations, scaled by ``scale``. It only asks for the right order, so the score's unit is free.
- unscored pairs (and triplets): in-batch negatives (``MultipleNegativesRankingLoss``): each first
  sentence should be closer to its own pair than to every other pair (and negative) of the batch.
- preservation: the mean cosine distance to a frozen copy of the pretrained encoder's embedding,
  or, relational (Tung and Mori, 2019, "Similarity-Preserving Knowledge Distillation"), the mean
  squared difference between the batch's cosine matrices under the model and under that copy.
"""

from __future__ import annotations

import torch
from torch import nn

SCALE = 20.0  # sentence-transformers' default for both losses


def cosent_loss(first: torch.Tensor, second: torch.Tensor, scores: torch.Tensor, scale: float = SCALE) -> torch.Tensor:
    """``(batch, hidden)`` twice and ``(batch,)`` gold scores -> the CoSENT loss."""
    cosines = nn.functional.cosine_similarity(first.float(), second.float(), dim=-1) * scale
    # entry (i, j): cos_j - cos_i, counted where pair i should be the more similar one
    differences = cosines[None, :] - cosines[:, None]
    ordered = scores[:, None] > scores[None, :]
    differences = differences[ordered]
    zero = torch.zeros(1, device=cosines.device, dtype=cosines.dtype)  # log(1 + sum exp): no violation, no loss
    return torch.logsumexp(torch.cat([zero, differences]), dim=0)


def in_batch_negatives_loss(anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None = None,
                            scale: float = SCALE) -> torch.Tensor:
    """Cross-entropy of each anchor over every candidate of the batch, its own positive the answer."""
    candidates = positives if negatives is None else torch.cat([positives, negatives])
    scores = _cosine_matrix(anchors.float(), candidates.float()) * scale
    return nn.functional.cross_entropy(scores, torch.arange(len(anchors), device=anchors.device))


def preservation_loss(embeddings: torch.Tensor, reference: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """``kind="cosine"``: mean of ``1 - cos`` between each embedding and its reference (a frozen
    encoder's). ``kind="similarities"``: mean squared difference between the cosine of every two
    embeddings of the batch and that of their references."""
    embeddings, reference = embeddings.float(), reference.float()
    if kind == "similarities":
        return (_cosine_matrix(embeddings, embeddings) - _cosine_matrix(reference, reference)).pow(2).mean()
    return (1 - nn.functional.cosine_similarity(embeddings, reference, dim=-1)).mean()


def _cosine_matrix(rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    return nn.functional.normalize(rows, dim=-1) @ nn.functional.normalize(columns, dim=-1).T
