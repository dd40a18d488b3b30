"""Layer pruning: an encoder with some of its transformer layers dropped (``model.keep_layers``).

The kept layers keep their trained weights and their order; the model's config records the new
depth, so the pruned encoder saves and loads as a plain, shallower model of the same family.
``every_other`` keeps layers 1, 3, 5, ... (the top layer among them), as DistilBERT's student is
made from its teacher; an integer N keeps the lowest N (drops the top ones); a list keeps those.
"""

from __future__ import annotations

from torch import nn

from mtl.model.freezing import encoder_layers
from mtl.model.multitask import MultiTaskModel


def kept_layers(plan: str | int | list[int], depth: int) -> list[int]:
    """The indices of the layers ``plan`` keeps, of an encoder ``depth`` layers deep."""
    if plan == "every_other":
        kept = list(range(1, depth, 2))
    elif isinstance(plan, int):
        kept = list(range(plan))
    else:
        kept = sorted(set(plan))
    if not kept or kept[0] < 0 or kept[-1] >= depth:
        raise ValueError(f"model.keep_layers: {plan!r} keeps no layers of, or layers outside, an encoder "
                         f"of {depth} layers (0-{depth - 1})")
    return kept


def prune_layers(model: MultiTaskModel, plan: str | int | list[int]) -> list[int]:
    """Drop the layers ``plan`` does not keep, in place; returns the kept indices."""
    layers = encoder_layers(model)
    kept = kept_layers(plan, len(layers))
    pruned = nn.ModuleList(layers[index] for index in kept)
    _replace_module(model.encoder.transformer, layers, pruned)
    config = model.encoder.transformer.config
    for name in ("num_hidden_layers", "n_layers", "num_layers"):  # BERT-style, DistilBERT, others
        if hasattr(config, name):
            setattr(config, name, len(kept))
    return kept


def _replace_module(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for parent in root.modules():
        for name, child in parent.named_children():
            if child is old:
                setattr(parent, name, new)
                return
    raise ValueError("the layer stack is not a child module of the encoder")
