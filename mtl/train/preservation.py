"""Embedding preservation: the pretrained encoder's embedding of every training sentence, as a target.

Multi-task fine-tuning bends the sentence embedding to the heads' needs (a classifier is happy with
an embedding that only separates its classes), and the embedding stops being a good general one
(STS-B drops by several points). Preservation distils the pretrained encoder into the model as it
trains, as sentence-transformers' ``MSELoss`` distils a teacher (Reimers & Gurevych, 2020, "Making
Monolingual Sentence Embeddings Multilingual using Knowledge Distillation"): the teacher is a frozen
copy of the encoder the model started from, and its embedding of each row is computed once, in the
data stage, as the row is tokenized, and travels with the row's features (``REFERENCE``), so no
training step runs a second forward pass. Rows a worker keeps in memory keep it too; rows read again
each pass (shares above ``keep_in_memory_rows``) are embedded again as they are read.
"""

from __future__ import annotations

import torch
from transformers import AutoModel

from mtl.config import ModelConfig
from mtl.data.features import Featurizer
from mtl.inference.model_folder import resolve_encoder
from mtl.model.encoder import SentenceEncoder

REFERENCE = "reference_embedding"
BATCH_ROWS = 64


class ReferenceEmbedder:
    """A frozen encoder that adds ``REFERENCE`` (its L2-normalized sentence embedding) to feature rows."""

    def __init__(self, encoder: SentenceEncoder, featurizer: Featurizer, device: torch.device):
        self.encoder = encoder.to(device).eval().requires_grad_(False)
        self.featurizer = featurizer
        self.device = device

    @classmethod
    def pretrained(cls, settings: ModelConfig, featurizer: Featurizer, device: torch.device) -> ReferenceEmbedder:
        """The encoder named in ``settings``, as training starts from it, with the model's pooling."""
        transformer = AutoModel.from_pretrained(resolve_encoder(settings.encoder))
        return cls(SentenceEncoder(transformer=transformer, pooling=settings.pooling, normalize=True),
                   featurizer, device)

    @torch.inference_mode()
    def add_embeddings(self, features: list[dict]) -> None:
        """Embed each row's inputs, in batches of rows of like length (little padding), in place."""
        order = sorted(range(len(features)), key=lambda index: len(features[index]["input_ids"]))
        names = self.featurizer.input_names
        for start in range(0, len(order), BATCH_ROWS):
            chunk = order[start:start + BATCH_ROWS]
            inputs = self.featurizer.collate([{name: features[index][name] for name in names} for index in chunk])
            vectors = self.encoder(**{name: tensor.to(self.device) for name, tensor in inputs.items()})
            for index, vector in zip(chunk, vectors.sentence_embedding.float().cpu().tolist()):
                features[index][REFERENCE] = vector
