"""Task specifications: what a head predicts, and the label <-> id maps saved with the model.

A classification task has one label per sentence. A tagging task has one BIO tag per word; its
label list is the tag set (``O``, ``B-PER``, ``I-PER``, ...), and tags decode to entity spans. A
similarity task has no labels and no head: it trains the sentence embedding on sentence pairs.
The label maps are built once from the training data and stored in the model folder, never
re-derived at inference.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from mtl.errors import DataError

TaskKind = Literal["classification", "tagging", "similarity"]
OUTSIDE = "O"


@dataclass(frozen=True)
class TaskSpec:
    """A task's name, kind and label vocabulary (position = class id)."""

    name: str
    kind: TaskKind
    labels: tuple[str, ...]

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def has_head(self) -> bool:
        """Whether the model has an output of its own for this task (similarity tasks have none)."""
        return self.kind != "similarity"

    @property
    def label_ids(self) -> dict[str, int]:
        return {label: index for index, label in enumerate(self.labels)}

    def label_id(self, label: str, where: str = "") -> int:
        """The id of ``label``; a label the training data never had is an error naming ``where``."""
        ids = self.label_ids
        if label not in ids:
            place = f"{where}: " if where else ""
            raise DataError(
                f"{place}task '{self.name}': unknown label {label!r}; "
                f"the training data has {list(self.labels)}"
            )
        return ids[label]

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "labels": list(self.labels)}

    @classmethod
    def from_dict(cls, data: dict) -> TaskSpec:
        return cls(name=data["name"], kind=data["kind"], labels=tuple(data["labels"]))

    @classmethod
    def from_labels(cls, name: str, kind: TaskKind, seen: Iterable[str]) -> TaskSpec:
        """Build the vocabulary from the labels (or tags) seen in training data, in a stable order.

        Classification labels are sorted; a tag set is ``O`` then ``B-``/``I-`` per entity type,
        sorted by type, so that it is complete even when a type never starts with ``I-`` in the data.
        """
        seen = set(seen)
        if kind == "similarity":
            return cls(name=name, kind=kind, labels=())
        if kind == "classification":
            return cls(name=name, kind=kind, labels=tuple(sorted(seen)))
        types = sorted({entity_type(tag) for tag in seen if tag != OUTSIDE})
        tags = [OUTSIDE] + [f"{prefix}-{kind_}" for kind_ in types for prefix in ("B", "I")]
        return cls(name=name, kind=kind, labels=tuple(tags))


def entity_type(tag: str) -> str:
    """``B-PER`` -> ``PER``."""
    return tag[2:]


def is_bio_tag(tag: str) -> bool:
    """True for ``O`` and for ``B-X`` / ``I-X`` with a non-empty type."""
    return tag == OUTSIDE or (len(tag) > 2 and tag[:2] in ("B-", "I-"))


def iob1_to_iob2(tags: list[str]) -> list[str]:
    """Convert IOB1 (``I-`` starts an entity unless it continues one of the same type) to IOB2.

    In IOB1, ``B-`` is used only between two adjacent entities of the same type.
    """
    converted = []
    previous = OUTSIDE
    for tag in tags:
        if tag.startswith("I-") and (previous == OUTSIDE or entity_type(previous) != entity_type(tag)):
            tag = "B-" + entity_type(tag)
        converted.append(tag)
        previous = tag
    return converted


def bio_spans(tags: list[str]) -> list[tuple[int, int, str]]:
    """Decode BIO tags to ``(start, end, type)`` word spans; ``end`` is exclusive.

    Follows conlleval (and seqeval's default mode): an ``I-X`` after ``O`` or after another type
    starts a new entity, so a model that forgets the ``B-`` still gets its entity counted.
    """
    spans = []
    start, current = None, None
    for index, tag in enumerate([*tags, OUTSIDE]):
        prefix, kind = tag[:1], entity_type(tag)
        begins = prefix == "B" or (prefix == "I" and kind != current)
        if start is not None and (prefix == OUTSIDE or begins):
            spans.append((start, index, current))
            start, current = None, None
        if begins:
            start, current = index, kind
    return spans
