import numpy as np
import pytest
import torch

from mtl.metrics import row_cosines
from mtl.model.encoder import Pooling


def test_mean_pooling_ignores_padding():
    tokens = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert Pooling(mode="mean")(tokens, mask).tolist() == [[2.0, 3.0]]
    assert Pooling(mode="max")(tokens, mask).tolist() == [[3.0, 4.0]]
    assert Pooling(mode="cls")(tokens, mask).tolist() == [[1.0, 2.0]]


def test_unknown_pooling_is_rejected():
    with pytest.raises(ValueError, match="pooling must be"):
        Pooling(mode="sum")


def test_embedding_of_a_text_does_not_depend_on_batch_padding(tiny_bundle):
    model, featurizer = tiny_bundle.model.eval(), tiny_bundle.featurizer
    with torch.inference_mode():
        alone = model(**featurizer.encode(texts=["short"]).inputs, tasks=[]).embeddings
        longer = featurizer.encode(texts=["short", "a much longer sentence than that"])
        padded = model(**longer.inputs, tasks=[]).embeddings
    torch.testing.assert_close(alone[0], padded[0], atol=1e-5, rtol=1e-5)
    assert torch.linalg.norm(padded, dim=-1).allclose(torch.ones(2))


def test_default_encoder_matches_sentence_transformers():
    """Mean-pooled, normalized MiniLM embeddings agree with sentence-transformers on the same folder."""
    from sentence_transformers import SentenceTransformer

    from mtl.config import ModelConfig
    from mtl.inference.model_folder import build_model, resolve_encoder
    from mtl.inference.predictor import Predictor

    texts = ["The cat sits on the mat.", "Ray Serve batches requests across replicas.",
             "Ünïcödé and emoji 🚀 work too", "a " * 300]
    reference = SentenceTransformer(resolve_encoder("all-MiniLM-L6-v2"), device="cpu").encode(
        texts, normalize_embeddings=True)
    bundle = build_model(ModelConfig(max_length=256), specs=[])
    ours = np.stack([prediction.embedding for prediction in Predictor(bundle, device="cpu").embed(texts)])
    cosine = row_cosines(ours, reference)
    assert cosine.min() > 0.999, cosine
