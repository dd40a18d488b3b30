"""Training rows changed on the fly, before they are tokenized (``tasks[i].augment``).

Classification takes EDA's word operations (Wei and Zou, 2019): random deletion, swap, and
insertion of words of other training sentences. Tagging takes label-preserving ones: an entity
replaced by another of the same type from the training data, and case changes. A row is augmented
with probability ``rows``, by one operation picked at random among those configured; the rate of the
operation says how much of the sentence it changes.

Words and entities to insert come from the rows around the row (the window the data stage
tokenizes at once, some thousands of rows), so no pass over the corpus is needed first. Every
choice comes from the generator the caller seeds, which the data stage seeds with (seed, task,
pass, rank, window): a pass is augmented the same way by every run, a resumed one too, and each
pass differently.
"""

from __future__ import annotations

import numpy as np

from mtl.task_config import AUGMENTATIONS, Augmentation
from mtl.tasks import bio_spans

CASES = (str.lower, str.upper, str.title)


class Augmenter:
    """Augments the rows of one task's window (classification: ``text``; tagging: ``tokens`` and IOB2 ``tags``)."""

    def __init__(self, settings: Augmentation, kind: str):
        self.settings = settings
        self.operations = [name for name in AUGMENTATIONS.get(kind, ()) if getattr(settings, name)]
        if not self.operations:
            raise ValueError(f"augment: no operation of a {kind} task has a rate above 0")

    def augment(self, rows: list[dict], generator: np.random.Generator) -> list[dict]:
        """``rows``, each augmented with probability ``rows`` (a changed copy; the others as they were)."""
        words = [word for row in rows for word in row["text"].split()] if "text" in rows[0] else []
        entities = entities_by_type(rows) if "tags" in rows[0] else {}
        changed = []
        for row in rows:
            if generator.random() >= self.settings.rows:
                changed.append(row)
                continue
            operation = self.operations[generator.integers(len(self.operations))]
            rate = getattr(self.settings, operation)
            if operation == "entity_substitution":
                changed.append(substitute_entities(row, entities, rate, generator))
            elif operation == "case":
                changed.append(change_case(row, rate, generator))
            else:
                changed.append({**row, "text": " ".join(WORD_OPERATIONS[operation](row["text"].split(), rate,
                                                                                   generator, words))})
        return changed


def delete_words(words: list[str], rate: float, generator: np.random.Generator, _pool=()) -> list[str]:
    """Each word dropped with probability ``rate``; one word is always left."""
    kept = [word for word in words if generator.random() >= rate]
    return kept or [words[generator.integers(len(words))]]


def swap_words(words: list[str], rate: float, generator: np.random.Generator, _pool=()) -> list[str]:
    """``rate`` of the sentence's length (at least one) swaps of two words at random places."""
    words = list(words)
    for _ in range(_count(len(words), rate)):
        first, second = generator.integers(len(words), size=2)
        words[first], words[second] = words[second], words[first]
    return words


def insert_words(words: list[str], rate: float, generator: np.random.Generator, pool: list[str]) -> list[str]:
    """``rate`` of the sentence's length (at least one) words of ``pool`` inserted at random places."""
    words = list(words)
    for _ in range(_count(len(words), rate) if pool else 0):
        words.insert(int(generator.integers(len(words) + 1)), pool[generator.integers(len(pool))])
    return words


WORD_OPERATIONS = {"deletion": delete_words, "swap": swap_words, "insertion": insert_words}


def entities_by_type(rows: list[dict]) -> dict[str, list[tuple[str, ...]]]:
    """The tokens of every entity in ``rows``, by entity type."""
    found: dict[str, list[tuple[str, ...]]] = {}
    for row in rows:
        for start, end, kind in bio_spans(row["tags"]):
            found.setdefault(kind, []).append(tuple(row["tokens"][start:end]))
    return found


def substitute_entities(row: dict, entities: dict[str, list[tuple[str, ...]]], rate: float,
                        generator: np.random.Generator) -> dict:
    """Each entity replaced, with probability ``rate``, by another entity of its type; tags follow."""
    tokens, tags, position = [], [], 0
    for start, end, kind in bio_spans(row["tags"]):
        tokens += row["tokens"][position:start]
        tags += row["tags"][position:start]
        entity = tuple(row["tokens"][start:end])
        if generator.random() < rate:
            entity = entities[kind][generator.integers(len(entities[kind]))]
        tokens += entity
        tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(entity) - 1)
        position = end
    return {**row, "tokens": tokens + row["tokens"][position:], "tags": tags + row["tags"][position:]}


def change_case(row: dict, rate: float, generator: np.random.Generator) -> dict:
    """Each word put, with probability ``rate``, in one case (lower, upper or title) picked for the sentence."""
    case = CASES[generator.integers(len(CASES))]
    return {**row, "tokens": [case(token) if generator.random() < rate else token for token in row["tokens"]]}


def _count(length: int, rate: float) -> int:
    return max(1, round(rate * length))
