"""THE preprocessing: text or pre-split words -> model inputs, shared by training, labeling and serving.

Word labels sit on the first subword of each word; the other subwords get ``IGNORE_INDEX`` so that
the loss and the metrics see one prediction per word. Character offsets are kept so that entity
predictions map back to the original text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mtl.tasks import TaskSpec

IGNORE_INDEX = -100
# a similarity row's second and third sentences: their model inputs carry these prefixes
PAIR_SIDES = ("pair", "negative")


@dataclass
class Encoded:
    """A padded batch ready for the model, plus what is needed to map outputs back to words.

    inputs: ``input_ids``, ``attention_mask`` (and ``token_type_ids`` where the model takes them),
        each a LongTensor ``(batch, seq)``.
    word_ids: per item, per subword position, the word index or None (special tokens, padding).
    offsets: per item, per subword position, its ``(start, end)`` characters in the text (for
        pre-split input, in its word).
    truncated: per item, whether words were cut off at ``max_length``.
    """

    inputs: dict[str, torch.Tensor]
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
    """Tokenizes with one tokenizer and one ``max_length``, the pair saved in the model folder."""

    def __init__(self, *, tokenizer, max_length: int):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("a fast (Rust) tokenizer is needed for word ids and character offsets")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.input_names = [name for name in ("input_ids", "attention_mask", "token_type_ids")
                            if name in tokenizer.model_input_names]

    def tokenize(self, texts: list[str] | None = None, words: list[list[str]] | None = None):
        """Tokenize raw texts or pre-split words (exactly one of the two), truncating, unpadded."""
        if (texts is None) == (words is None):
            raise ValueError("pass either texts or words")
        return self.tokenizer(
            texts if words is None else words,
            is_split_into_words=words is not None,
            truncation=True,
            max_length=self.max_length,
            return_offsets_mapping=True,
        )

    def featurize(self, texts: list[str] | None = None, words: list[list[str]] | None = None) -> list[ItemFeatures]:
        """Tokenize a batch for inference, each item unpadded, so that items can be grouped by
        token count before padding (grouping by characters pads far more: numbers and names split
        into many subwords)."""
        if not (texts if words is None else words):
            return []
        batch = self.tokenize(texts, words)
        return [
            ItemFeatures(inputs={name: batch[name][index] for name in self.input_names},
                         word_ids=batch.word_ids(index), offsets=list(map(tuple, batch["offset_mapping"][index])),
                         truncated=bool(encoding.overflowing))
            for index, encoding in enumerate(batch.encodings)
        ]

    def pad(self, items: list[ItemFeatures]) -> Encoded:
        """Items from ``featurize`` as one padded batch."""
        return Encoded(inputs=self.collate([item.inputs for item in items]), word_ids=[item.word_ids for item in items],
                       offsets=[item.offsets for item in items], truncated=[item.truncated for item in items])

    def encode(self, texts: list[str] | None = None, words: list[list[str]] | None = None) -> Encoded:
        """Tokenize and pad a batch for inference."""
        return self.pad(self.featurize(texts, words))

    def classification_features(self, rows: list[dict], spec: TaskSpec) -> list[dict]:
        """Rows ``{"text", "label"}`` -> ``{input ids..., "labels": int}``; unknown labels name their origin."""
        batch = self.tokenize(texts=[row["text"] for row in rows])
        return [
            {**{name: batch[name][index] for name in self.input_names},
             "labels": spec.label_id(row["label"], row.get("origin", ""))}
            for index, row in enumerate(rows)
        ]

    def tagging_features(self, rows: list[dict], spec: TaskSpec) -> list[dict]:
        """Rows ``{"tokens", "tags"}`` -> ``{input ids..., "labels": [per subword]}`` (first subword labeled)."""
        batch = self.tokenize(words=[row["tokens"] for row in rows])
        features = []
        for index, row in enumerate(rows):
            tag_ids = [spec.label_id(tag, row.get("origin", "")) for tag in row["tags"]]
            features.append({
                **{name: batch[name][index] for name in self.input_names},
                "labels": first_subword_labels(batch.word_ids(index), tag_ids),
            })
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
            feature = {prefix + name: batch[name][index]
                       for prefix, batch in sides.items() for name in self.input_names}
            if "score" in row:
                low, high = score_range
                feature["labels"] = (row["score"] - low) / (high - low)
            features.append(feature)
        return features

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        """Pad a list of feature rows, each column to its longest value: ids with the pad token, masks
        with 0, labels ignored."""
        pad_values = {"input_ids": self.tokenizer.pad_token_id or 0, "attention_mask": 0,
                      "token_type_ids": 0, "labels": IGNORE_INDEX}
        batch = {}
        for name in rows[0]:
            values = [row[name] for row in rows]
            if isinstance(values[0], (int, float)) or getattr(values[0], "ndim", 1) == 0:
                batch[name] = torch.tensor(values)
            else:
                longest = max(map(len, values))
                pad = pad_values.get(_unprefixed(name), 0)
                batch[name] = torch.tensor([list(value) + [pad] * (longest - len(value)) for value in values])
        return batch


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
