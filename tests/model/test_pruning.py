"""Layer pruning: the kept layers keep their weights and order, and the shallower model saves and
loads as a plain model folder that answers as it did."""

import pytest
import torch

from mtl.inference.model_folder import load_model_folder, save_model_folder
from mtl.model.freezing import encoder_layers
from mtl.model.pruning import kept_layers, prune_layers


@pytest.mark.parametrize(("plan", "depth", "kept"), [
    ("every_other", 6, [1, 3, 5]), ("every_other", 12, list(range(1, 12, 2))), (4, 6, [0, 1, 2, 3]),
    ([5, 0, 2], 6, [0, 2, 5])])
def test_which_layers_a_plan_keeps(plan, depth, kept):
    assert kept_layers(plan, depth) == kept


@pytest.mark.parametrize("plan", [0, 7, [6], [-1], []])
def test_a_plan_outside_the_encoder_is_an_error_naming_the_field(plan):
    with pytest.raises(ValueError, match="model.keep_layers"):
        kept_layers(plan, 6)


def test_a_pruned_model_keeps_its_layers_and_loads_back_answering_alike(tiny_bundle, tmp_path):
    model = tiny_bundle.model.eval()
    top = encoder_layers(model)[-1]
    assert prune_layers(model, "every_other") == [1]
    assert list(encoder_layers(model)) == [top]
    assert model.encoder.transformer.config.num_hidden_layers == 1
    inputs = tiny_bundle.featurizer.encode(texts=["John lives in Paris", "good"]).inputs
    with torch.no_grad():
        before = model(**inputs)
    loaded = load_model_folder(save_model_folder(tiny_bundle, tmp_path / "pruned"))
    assert len(encoder_layers(loaded.model)) == 1
    with torch.no_grad():
        after = loaded.model.eval()(**inputs)
    torch.testing.assert_close(after.embeddings, before.embeddings)
    torch.testing.assert_close(after.logits["ner"], before.logits["ner"])
