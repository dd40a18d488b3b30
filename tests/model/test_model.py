import pytest
import torch

from mtl.model.freezing import (
    encoder_layers,
    freeze_embeddings,
    freeze_encoder,
    freeze_lowest_layers,
    unfreeze_top_layers,
)
from mtl.model.heads import head_loss


def batch_for(bundle, texts):
    return bundle.featurizer.encode(texts=texts).inputs


def test_one_pass_gives_every_task_with_the_right_shapes(tiny_bundle):
    inputs = batch_for(tiny_bundle, ["a b c", "d"])
    output = tiny_bundle.model(**inputs)
    seq = inputs["input_ids"].shape[1]
    assert output.embeddings.shape == (2, 32)
    assert output.logits["sentiment"].shape == (2, 2)
    assert output.logits["ner"].shape == (2, seq, 7)
    assert output.loss is None and output.losses == {}


def test_a_subset_of_tasks_runs_only_those_heads(tiny_bundle):
    output = tiny_bundle.model(**batch_for(tiny_bundle, ["x"]), tasks=["ner"])
    assert list(output.logits) == ["ner"]
    with pytest.raises(KeyError, match="unknown task"):
        tiny_bundle.model(**batch_for(tiny_bundle, ["x"]), tasks=["topic"])


def test_loss_only_for_tasks_with_labels_and_it_trains(tiny_bundle):
    model = tiny_bundle.model.train()
    inputs = batch_for(tiny_bundle, ["good", "bad"])
    labels = {"sentiment": torch.tensor([1, 0])}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        output = model(**inputs, tasks=["sentiment"], labels=labels)
        assert set(output.losses) == {"sentiment"}
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.loss.item())
    assert losses[-1] < losses[0] / 2


def test_head_loss_ignores_ignored_positions_and_never_nans():
    logits = torch.tensor([[[5.0, 0.0], [0.0, 5.0], [9.0, -9.0]]])
    labels = torch.tensor([[0, 1, -100]])
    loss_all_right = head_loss(logits, labels)
    assert loss_all_right < 0.01
    assert head_loss(logits, torch.full((1, 3), -100)).item() == 0.0


def trainable(module):
    return all(parameter.requires_grad for parameter in module.parameters())


def test_freeze_encoder_leaves_heads_trainable(tiny_bundle):
    model = tiny_bundle.model
    freeze_encoder(model)
    assert not any(parameter.requires_grad for parameter in model.encoder.parameters())
    assert trainable(model.heads)


def test_freeze_lowest_layers_then_unfreeze_top_down(tiny_bundle):
    model = tiny_bundle.model
    layers = encoder_layers(model)
    assert len(layers) == 2
    freeze_lowest_layers(model, 2)
    assert not trainable(layers[0]) and not trainable(layers[1])
    assert not trainable(model.encoder.transformer.embeddings)
    unfreeze_top_layers(model, 1)
    assert trainable(layers[1]) and not trainable(layers[0])
    unfreeze_top_layers(model, 3)
    assert trainable(layers[0]) and trainable(model.encoder.transformer.embeddings)
    with pytest.raises(ValueError, match="has 2"):
        freeze_lowest_layers(model, 3)


def test_freeze_embeddings_only(tiny_bundle):
    model = tiny_bundle.model
    freeze_embeddings(model)
    assert not trainable(model.encoder.transformer.embeddings)
    assert trainable(encoder_layers(model)[0])
