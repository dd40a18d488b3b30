"""One shared encoder, one head per task, every requested task from a single encoder pass.

Similarity tasks have no head: they train the sentence embedding itself (``similarity_loss``), and
the model answers them with its embedding.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from mtl.data.features import side_inputs
from mtl.model.encoder import SentenceEncoder
from mtl.model.heads import Head, head_loss
from mtl.model.similarity import cosent_loss, in_batch_negatives_loss
from mtl.tasks import TaskSpec


@dataclass
class MultiTaskOutput:
    """embeddings ``(batch, hidden)``; logits per task: ``(batch, labels)`` for classification,
    ``(batch, seq, labels)`` for tagging; losses per task that had labels, and their sum;
    the encoder's token states ``(batch, seq, hidden)`` where the model hands them out, and
    every layer's output when asked for (``layer_states``)."""

    embeddings: torch.Tensor
    logits: dict[str, torch.Tensor]
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    token_embeddings: torch.Tensor | None = None
    layer_states: tuple[torch.Tensor, ...] | None = None

    @property
    def loss(self) -> torch.Tensor | None:
        return sum(self.losses.values()) if self.losses else None


class MultiTaskModel(nn.Module):
    """A SentenceEncoder and a ModuleDict of heads keyed by task name.

    ``specs``: the tasks with a head, whose outputs ``forward`` gives; ``task_specs``: every task,
    similarity tasks too (what the model folder records).
    """

    def __init__(self, *, encoder: SentenceEncoder, specs: list[TaskSpec], dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.task_specs = {spec.name: spec for spec in specs}
        self.specs = {spec.name: spec for spec in specs if spec.has_head}
        self.heads = nn.ModuleDict({
            name: Head(hidden_size=encoder.hidden_size, num_labels=spec.num_labels, dropout=dropout)
            for name, spec in self.specs.items()
        })

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, *, tasks: list[str] | None = None,
                labels: dict[str, torch.Tensor] | None = None, train_encoder: bool = True,
                layer_states: bool = False) -> MultiTaskOutput:
        """Encode once, run the heads of ``tasks`` (default: all), and a loss for each task in ``labels``;
        with ``train_encoder=False`` the losses reach the heads only (no graph through the encoder);
        ``layer_states`` hands out every encoder layer's output too."""
        tasks = list(self.specs) if tasks is None else tasks
        labels = labels or {}
        unknown = sorted(set(tasks) - set(self.specs))
        if unknown:
            raise KeyError(f"unknown task(s) {unknown}; the model has {sorted(self.specs)}")
        with contextlib.nullcontext() if train_encoder else torch.no_grad():
            encoded = self.encoder(input_ids, attention_mask, token_type_ids, layer_states=layer_states)
        logits = {}
        for task in tasks:
            tagging = self.specs[task].kind == "tagging"
            logits[task] = self.heads[task](encoded.token_embeddings if tagging else encoded.pooled)
        losses = {task: head_loss(logits[task], labels[task]) for task in tasks if task in labels}
        return MultiTaskOutput(embeddings=encoded.sentence_embedding, logits=logits, losses=losses,
                               token_embeddings=encoded.token_embeddings, layer_states=encoded.layer_states)

    def similarity_loss(self, batch: dict[str, torch.Tensor], scores: torch.Tensor | None = None) -> torch.Tensor:
        """A similarity batch (``mtl.data.features``: each sentence's inputs) -> CoSENT on pairs with
        ``scores``, in-batch negatives on unscored pairs and triplets."""
        first, pair = (self.encoder(**side_inputs(batch, side)).sentence_embedding for side in ("", "pair"))
        if scores is not None:
            return cosent_loss(first, pair, scores)
        negative = side_inputs(batch, "negative")
        return in_batch_negatives_loss(first, pair, None if negative is None else
                                       self.encoder(**negative).sentence_embedding)
