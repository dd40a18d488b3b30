"""One text looked at closely, for the demo page: its subword tokens, each tagging task's tag and
probability per token, and the attention weights of one layer and head.

It takes the Predictor's model and featurizer, so the tokens are those every prediction sees. Only
the PyTorch backend hands out attention weights (the ONNX export computes them inside fused nodes).
"""

from __future__ import annotations

from dataclasses import dataclass

from mtl.inference.onnx_backend import OnnxMultiTaskModel
from mtl.inference.predictor import Predictor


class InspectionError(ValueError):
    """A request ``inspect`` cannot answer, with the field at fault."""


class NotInspectable(RuntimeError):
    """The served model cannot be inspected (a backend without attention weights)."""


@dataclass
class TokenTag:
    tag: str
    score: float


@dataclass
class Inspection:
    """tokens: the subword tokens, special tokens included; tags: per tagging task, one per token
    (the first subword of a word carries the word's tag); attention ``(tokens, tokens)``: how much
    each token (row) attends to each token (column) in ``layer`` and ``head``."""

    tokens: list[str]
    tags: dict[str, list[TokenTag]]
    layer: int
    head: int
    layers: int
    heads: int
    attention: list[list[float]]
    truncated: bool


def inspect_text(predictor: Predictor, text: str, *, layer: int = -1, head: int = 0,
                 max_tokens: int = 128) -> Inspection:
    """Tokens, token tags and one layer's and head's attention for ``text``."""
    model = predictor.model
    if isinstance(model, OnnxMultiTaskModel):
        raise NotInspectable("attention weights come from the torch backend; this endpoint runs onnx")
    import torch  # here, not above: an endpoint on ONNX never loads it
    problem = predictor.check_text(text)
    if problem:
        raise InspectionError(f"text: {problem}")
    features = predictor.featurizer.featurize(texts=[text])[0]
    if len(features) > max_tokens:
        raise InspectionError(f"text: {len(features)} tokens; /v1/inspect takes at most {max_tokens}")
    encoded = predictor.featurizer.pad([features])
    inputs = {name: tensor.to(predictor.device) for name, tensor in encoded.inputs.items()}
    transformer = model.encoder.transformer
    layers, heads = transformer.config.num_hidden_layers, transformer.config.num_attention_heads
    layer = _checked_index("layer", layer, layers)
    head = _checked_index("head", head, heads)
    tagging = [name for name, spec in predictor.specs.items() if spec.kind == "tagging"]
    with torch.inference_mode():
        attentions = model.encoder.attentions(**inputs)
        logits = model(**inputs, tasks=tagging).logits
    tags = {}
    for task in tagging:
        probabilities = torch.softmax(logits[task][0].float(), dim=-1)
        best = probabilities.max(dim=-1)
        labels = predictor.specs[task].labels
        tags[task] = [TokenTag(labels[index], round(float(score), 4))
                      for index, score in zip(best.indices.tolist(), best.values.tolist())]
    weights = attentions[layer][0, head].float().cpu()
    return Inspection(tokens=predictor.featurizer.tokens(inputs["input_ids"][0].tolist()),
                      tags=tags, layer=layer, head=head, layers=layers, heads=heads,
                      attention=weights.round(decimals=4).tolist(), truncated=features.truncated)


def _checked_index(name: str, value: int, count: int) -> int:
    """``value`` as a non-negative index below ``count`` (negative counts from the end, as in Python)."""
    if not -count <= value < count:
        raise InspectionError(f"{name}: {value} is out of range; the model has {count} (0 to {count - 1})")
    return value % count
