"""The shared sentence encoder: a Hugging Face transformer plus attention-mask-aware pooling.

The transformer arrives already built (see ``mtl.inference.model_folder``): this module never reads files or
picks a device, so it can be built in a test from a tiny random config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

PoolingMode = Literal["mean", "cls", "max"]


@dataclass
class EncoderOutput:
    """token_embeddings ``(batch, seq, hidden)``; pooled ``(batch, hidden)`` before normalization
    (what the heads read); sentence_embedding ``(batch, hidden)``, L2-normalized when asked;
    layer_states, when asked for: every layer's output ``(batch, seq, hidden)``, lowest first."""

    token_embeddings: torch.Tensor
    pooled: torch.Tensor
    sentence_embedding: torch.Tensor
    layer_states: tuple[torch.Tensor, ...] | None = None


class Pooling(nn.Module):
    """Token vectors -> one sentence vector, ignoring padding (mean and max read only real tokens)."""

    def __init__(self, *, mode: PoolingMode = "mean"):
        super().__init__()
        if mode not in ("mean", "cls", "max"):
            raise ValueError(f"pooling must be mean, cls or max, not {mode!r}")
        self.mode = mode

    def forward(self, token_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(batch, seq, hidden)``, ``(batch, seq)`` -> ``(batch, hidden)``."""
        if self.mode == "cls":
            return token_embeddings[:, 0]
        mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
        if self.mode == "max":
            lowest = torch.finfo(token_embeddings.dtype).min
            return token_embeddings.masked_fill(mask == 0, lowest).max(dim=1).values
        # note: clamp keeps an all-padding row (never produced by the tokenizer) from dividing by zero
        return (token_embeddings * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class SentenceEncoder(nn.Module):
    """A transformer whose last hidden state is pooled into one embedding per sentence."""

    def __init__(self, *, transformer: nn.Module, pooling: PoolingMode = "mean", normalize: bool = True):
        super().__init__()
        self.transformer = transformer
        self.pooling = Pooling(mode=pooling)
        self.normalize = normalize

    @property
    def hidden_size(self) -> int:
        return self.transformer.config.hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, *, layer_states: bool = False) -> EncoderOutput:
        """``(batch, seq)`` ids and mask -> token and sentence embeddings (and every layer's output)."""
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        output = self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                  output_hidden_states=layer_states, **extra)
        tokens = output.last_hidden_state
        pooled = self.pooling(tokens, attention_mask)
        embedding = nn.functional.normalize(pooled, p=2, dim=-1) if self.normalize else pooled
        # note: hidden_states[0] is the embedding layer's output, not a transformer layer's
        return EncoderOutput(token_embeddings=tokens, pooled=pooled, sentence_embedding=embedding,
                             layer_states=output.hidden_states[1:] if layer_states else None)

    def attentions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Every layer's attention weights, each ``(batch, heads, seq, seq)``, for looking at a text.

        Fused attention kernels (sdpa, flash) never form the weights, so the transformer runs its
        plain ("eager") attention for this call and is switched back after it: callers must not
        run predictions on another thread meanwhile (the endpoint runs both on one thread or lock).
        """
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        fused = self.transformer.config._attn_implementation
        self.transformer.set_attn_implementation("eager")
        try:
            return self.transformer(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True,
                                    **extra).attentions
        finally:
            self.transformer.set_attn_implementation(fused)
