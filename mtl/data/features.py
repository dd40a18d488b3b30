"""THE preprocessing: text or pre-split words -> model inputs, shared by training, labeling and serving.

Word labels sit on the first subword of each word; the other subwords get ``IGNORE_INDEX`` so that
the loss and the metrics see one prediction per word. Character offsets are kept so that entity
predictions map back to the original text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import Encoding, Tokenizer

from mtl.errors import ModelFolderError
from mtl.tasks import TaskSpec

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
# which field of a tokenizers.Encoding feeds which model input
_ENCODING_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
# a similarity row's second and third sentences: their model inputs carry these prefixes
PAIR_SIDES = ("pair", "negative")


@dataclass
class Encoded:
    """A padded batch ready for the model, plus what is needed to map outputs back to words.

    inputs: ``input_ids``, ``attention_mask`` (and ``token_type_ids`` where the model takes them),
        each ``(batch, seq)``: LongTensors, or int64 arrays when padded with ``tensors="np"``.
    word_ids: per item, per subword position, the word index or None (special tokens, padding).
    offsets: per item, per subword position, its ``(start, end)`` characters in the text (for
        pre-split input, in its word).
    truncated: per item, whether words were cut off at ``max_length``.
    """

    inputs: dict[str, torch.Tensor] | dict[str, np.ndarray]
    word_ids: list[list[int | None]]
    offsets: list[list[tuple[int, int]]]
    truncated: list[bool]


@dataclass
class ItemFeatures:
    """One item tokenized for inference, before padding: what ``Encoded`` holds for one row."""

    inputs: dict[str, list[int]]
    word_ids: list[int | None]
    offsets: list[tuple[int, int]]
    truncated: bool

    def __len__(self) -> int:
        return len(self.inputs["input_ids"])


class Featurizer:
    """Tokenizes with one tokenizer and one ``max_length``, the pair saved in the model folder.

    Tokenizing runs on the tokenizer's Rust pipeline (``tokenizers``), as the Hugging Face fast
    tokenizer's own call does, so that a folder's ``tokenizer.json`` alone featurizes
    (``from_folder``): the ONNX backend then loads neither transformers nor torch.
    """

    def __init__(self, *, tokenizer, max_length: int):
        """tokenizer: a Hugging Face fast tokenizer (kept as ``tokenizer``, for saving)."""
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("a fast (Rust) tokenizer is needed for word ids and character offsets")
        self.tokenizer = tokenizer
        # a copy: this featurizer's truncation must not change the tokenizer that is saved with the model
        self._setup(Tokenizer.from_str(tokenizer.backend_tokenizer.to_str()), max_length=max_length,
                    input_names=[name for name in _ENCODING_FIELDS if name in tokenizer.model_input_names],
                    pad_token_id=tokenizer.pad_token_id, truncation_side=tokenizer.truncation_side)

    @classmethod
    def from_folder(cls, folder: Path, *, max_length: int, input_names: list[str]) -> Featurizer:
        """The featurizer of a model folder from its tokenizer files alone, for a model that takes
        ``input_names``; ``tokenizer`` is None (nothing to save)."""
        path = folder / TOKENIZER_FILE
        if not path.is_file():
            raise ModelFolderError(f"{folder}: no {TOKENIZER_FILE} (the folder's fast tokenizer)")
        config_path = folder / TOKENIZER_CONFIG_FILE
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        backend = Tokenizer.from_file(str(path))
        pad_token = config.get("pad_token")
        pad_token = pad_token.get("content") if isinstance(pad_token, dict) else pad_token  # an AddedToken
        featurizer = cls.__new__(cls)
        featurizer.tokenizer = None
        featurizer._setup(backend, max_length=max_length, input_names=input_names,
                          pad_token_id=backend.token_to_id(pad_token) if isinstance(pad_token, str) else None,
                          truncation_side=config.get("truncation_side", "right"))
        return featurizer

    def _setup(self, backend: Tokenizer, *, max_length: int, input_names: list[str], pad_token_id: int | None,
               truncation_side: str) -> None:
        # truncation and no padding, as the Hugging Face tokenizer sets them for its call
        backend.no_padding()
        self.backend = backend
        self.truncation_side = truncation_side
        self.max_length = max_length
        self.input_names = input_names
        self.pad_token_id = pad_token_id or 0

    @property
    def max_length(self) -> int:
        return self._max_length

    @max_length.setter
    def max_length(self, value: int) -> None:
        self.backend.enable_truncation(value, direction=self.truncation_side)
        self._max_length = value

    def tokenize(self, texts: list[str] | None = None, words: list[list[str]] | None = None) -> list[Encoding]:
        """Tokenize raw texts or pre-split words (exactly one of the two), truncating, unpadded."""
        if (texts is None) == (words is None):
            raise ValueError("pass either texts or words")
        return self.backend.encode_batch(texts if words is None else words, is_pretokenized=words is not None)

    def model_inputs(self, encoding: Encoding) -> dict[str, list[int]]:
        """The model's inputs from one item's encoding."""
        return {name: getattr(encoding, _ENCODING_FIELDS[name]) for name in self.input_names}

    def tokens(self, ids: list[int]) -> list[str]:
        """The subword strings of ``ids``."""
        return [self.backend.id_to_token(token_id) for token_id in ids]

    def featurize(self, texts: list[str] | None = None, words: list[list[str]] | None = None) -> list[ItemFeatures]:
        """Tokenize a batch for inference, each item unpadded, so that items can be grouped by
        token count before padding (grouping by characters pads far more: numbers and names split
        into many subwords)."""
        if not (texts if words is None else words):
            return []
        return [ItemFeatures(inputs=self.model_inputs(encoding), word_ids=encoding.word_ids,
                             offsets=encoding.offsets, truncated=bool(encoding.overflowing))
                for encoding in self.tokenize(texts, words)]

    def pad(self, items: list[ItemFeatures], tensors: str = "pt") -> Encoded:
        """Items from ``featurize`` as one padded batch of LongTensors (``tensors="pt"``) or int64
        arrays (``"np"``)."""
        inputs = self.pad_columns([item.inputs for item in items])
        return Encoded(inputs=inputs if tensors == "np" else _as_tensors(inputs),
                       word_ids=[item.word_ids for item in items], offsets=[item.offsets for item in items],
                       truncated=[item.truncated for item in items])

    def encode(self, texts: list[str] | None = None, words: list[list[str]] | None = None) -> Encoded:
        """Tokenize and pad a batch for inference."""
        return self.pad(self.featurize(texts, words))

    def classification_features(self, rows: list[dict], spec: TaskSpec) -> list[dict]:
        """Rows ``{"text", "label"}`` -> ``{input ids..., "labels": int}``; unknown labels name their origin."""
        encodings = self.tokenize(texts=[row["text"] for row in rows])
        return [
            {**self.model_inputs(encoding), "labels": spec.label_id(row["label"], row.get("origin", ""))}
            for encoding, row in zip(encodings, rows)
        ]

    def tagging_features(self, rows: list[dict], spec: TaskSpec) -> list[dict]:
        """Rows ``{"tokens", "tags"}`` -> ``{input ids..., "labels": [per subword]}`` (first subword labeled)."""
        encodings = self.tokenize(words=[row["tokens"] for row in rows])
        features = []
        for encoding, row in zip(encodings, rows):
            tag_ids = [spec.label_id(tag, row.get("origin", "")) for tag in row["tags"]]
            features.append({**self.model_inputs(encoding), "labels": first_subword_labels(encoding.word_ids, tag_ids)})
        return features

    def similarity_features(self, rows: list[dict], spec: TaskSpec, score_range: tuple[float, float] | None
                            ) -> list[dict]:
        """Rows ``{"text", "pair"[, "score" | "negative"]}`` -> the inputs of each sentence (the second's
        and third's prefixed ``pair_`` and ``negative_``) and, for scored pairs, ``labels``: the score
        scaled to [0, 1] by ``score_range``."""
        sides = {"": self.tokenize(texts=[row["text"] for row in rows])}
        for side in PAIR_SIDES:
            if side in rows[0]:
                sides[f"{side}_"] = self.tokenize(texts=[row[side] for row in rows])
        features = []
        for index, row in enumerate(rows):
            feature = {prefix + name: value for prefix, encodings in sides.items()
                       for name, value in self.model_inputs(encodings[index]).items()}
            if "score" in row:
                low, high = score_range
                feature["labels"] = (row["score"] - low) / (high - low)
            features.append(feature)
        return features

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        """Pad a list of feature rows into LongTensors (scores stay floats), each column to its
        longest value: ids with the pad token, masks with 0, labels ignored."""
        import torch  # here, not above: inference on ONNX pads with pad_columns and never needs torch

        scalars = {name: torch.tensor([row[name] for row in rows]) for name in rows[0] if _is_scalar(rows[0][name])}
        sequences = self.pad_columns([{name: row[name] for name in row if name not in scalars} for row in rows])
        return {name: scalars[name] if name in scalars else torch.from_numpy(sequences[name]) for name in rows[0]}

    def pad_columns(self, rows: list[dict]) -> dict[str, np.ndarray]:
        """Rows of sequences as arrays ``(rows, longest)``, int64 (float32 for float columns, such
        as reference embeddings), padded as ``collate`` pads."""
        pad_values = {"input_ids": self.pad_token_id, "attention_mask": 0, "token_type_ids": 0, "labels": IGNORE_INDEX}
        columns = {}
        for name in rows[0]:
            values = [row[name] for row in rows]
            dtype = np.float32 if np.asarray(values[0]).dtype.kind == "f" else np.int64
            column = np.full((len(values), max(map(len, values))), pad_values.get(_unprefixed(name), 0), dtype=dtype)
            for index, value in enumerate(values):
                column[index, :len(value)] = value
            columns[name] = column
        return columns


def _is_scalar(value) -> bool:
    return isinstance(value, (int, float)) or getattr(value, "ndim", 1) == 0


def _as_tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    import torch

    return {name: torch.from_numpy(array) for name, array in arrays.items()}


def _unprefixed(name: str) -> str:
    """``pair_input_ids`` -> ``input_ids``."""
    side, _, rest = name.partition("_")
    return rest if side in PAIR_SIDES else name


def side_inputs(batch: dict[str, torch.Tensor], side: str) -> dict[str, torch.Tensor] | None:
    """The model inputs of one sentence of a similarity batch (``""``, ``"pair"``, ``"negative"``), if it has it."""
    prefix = f"{side}_" if side else ""
    inputs = {name: batch[prefix + name] for name in ("input_ids", "attention_mask", "token_type_ids")
              if prefix + name in batch}
    return inputs or None


def first_subword_labels(word_ids: list[int | None], word_labels: list[int]) -> list[int]:
    """Label the first subword of each word; ignore later subwords and special tokens.

    Words cut off by truncation simply get no position, so the loss never sees them.
    """
    labels, previous = [], None
    for word in word_ids:
        labels.append(word_labels[word] if word is not None and word != previous else IGNORE_INDEX)
        previous = word
    return labels


def first_subword_positions(word_ids: list[int | None]) -> list[int]:
    """Positions of the first subword of each word, in word order: where word predictions are read."""
    positions, previous = [], None
    for position, word in enumerate(word_ids):
        if word is not None and word != previous:
            positions.append(position)
        previous = word
    return positions


def word_character_spans(word_ids: list[int | None], offsets: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``(start, end)`` characters of each word in the text, from its subwords' offsets."""
    spans: dict[int, list[int]] = {}
    for word, (start, end) in zip(word_ids, offsets):
        if word is None:
            continue
        if word in spans:
            spans[word][1] = end
        else:
            spans[word] = [start, end]
    return [tuple(spans[word]) for word in sorted(spans)]
