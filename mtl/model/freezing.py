"""Freezing parts of the shared encoder: all of it, its embeddings, or its lowest k layers.

Freezing sets ``requires_grad``; it is undone layer by layer for gradual unfreezing (top first).
"""

from __future__ import annotations

from torch import nn

from mtl.model.multitask import MultiTaskModel

# where BERT-family models keep their stack of layers (BERT/RoBERTa/MiniLM/ELECTRA, DistilBERT)
_LAYER_PATHS = ("encoder.layer", "transformer.layer", "layers", "encoder.layers")


def encoder_layers(model: MultiTaskModel) -> nn.ModuleList:
    """The transformer's layers, lowest first."""
    transformer = model.encoder.transformer
    for path in _LAYER_PATHS:
        node = transformer
        for part in path.split("."):
            node = getattr(node, part, None)
        if isinstance(node, nn.ModuleList):
            return node
    raise ValueError(f"cannot find the layer stack of {type(transformer).__name__} (looked for {_LAYER_PATHS})")


def encoder_embeddings(model: MultiTaskModel) -> nn.Module:
    """The transformer's input embeddings module (word, position and type embeddings)."""
    transformer = model.encoder.transformer
    embeddings = getattr(transformer, "embeddings", None)
    return embeddings if isinstance(embeddings, nn.Module) else transformer.get_input_embeddings()


def set_trainable(module: nn.Module, trainable: bool) -> None:
    for parameter in module.parameters():
        parameter.requires_grad = trainable


def freeze_encoder(model: MultiTaskModel) -> None:
    """Train the heads only."""
    set_trainable(model.encoder, False)


def freeze_embeddings(model: MultiTaskModel) -> None:
    set_trainable(encoder_embeddings(model), False)


def freeze_lowest_layers(model: MultiTaskModel, count: int) -> None:
    """Freeze the embeddings and the lowest ``count`` layers (the general-purpose ones)."""
    layers = encoder_layers(model)
    if not 0 <= count <= len(layers):
        raise ValueError(f"cannot freeze {count} layers: the encoder has {len(layers)}")
    freeze_embeddings(model)
    for layer in layers[:count]:
        set_trainable(layer, False)


def unfreeze_top_layers(model: MultiTaskModel, count: int) -> None:
    """Make the top ``count`` layers trainable again (gradual unfreezing goes top down)."""
    layers = encoder_layers(model)
    for layer in layers[len(layers) - min(count, len(layers)):]:
        set_trainable(layer, True)
    if count > len(layers):
        set_trainable(encoder_embeddings(model), True)
