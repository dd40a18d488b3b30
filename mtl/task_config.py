"""A task's part of the config: its kind, its training and evaluation data (``DataSource``: files,
format, columns) and its augmentation. Validated as ``mtl.config`` validates the whole.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mtl.errors import ConfigError
from mtl.formats import LABELED_DATA_SUFFIXES

DataFormat = Literal["conll", "csv", "tsv", "jsonl", "parquet"]


class FrozenModel(BaseModel):
    """Every section of the config: immutable, and an unknown key is an error that names it."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSource(FrozenModel):
    """Where one split of one task lives and how to read it.

    Columns are names, or 0-based indices for headerless TSV/CSV. A classification task reads
    ``text_column`` and ``label_column``; a tagging task reads ``tokens_column`` and ``tags_column``
    (CoNLL files: ``token_field`` and ``tag_field`` of each line), or with ``spans_column`` the text
    of ``text_column`` and its entities as ``{start, end, label}`` character spans (a label job's
    output reads back this way); a similarity task reads sentence
    pairs from ``text_column`` and ``pair_column``, with a score in ``score_column`` (which must lie in
    ``score_range``) or, unscored, optionally a third sentence unlike the first in ``negative_column``.
    ``skip_unlabeled`` passes over rows whose label (or tags, or spans) is null, as a label job
    leaves the rows it could not label, instead of refusing them.
    """

    path: str
    format: DataFormat | None = None
    text_column: str | int = "text"
    label_column: str | int = "label"
    tokens_column: str = "tokens"
    tags_column: str = "tags"
    pair_column: str | int = "pair"
    spans_column: str | None = None
    skip_unlabeled: bool = False
    score_column: str | int | None = None
    score_range: tuple[float, float] | None = None
    negative_column: str | int | None = None
    header: bool = True
    token_field: int = 0
    tag_field: int = -1
    scheme: Literal["iob1", "iob2"] = "iob2"
    encoding: str = "utf-8"

    def format_of(self, file: str | None = None) -> str:
        """The declared format, else the one the suffix of ``file`` (default: ``path``) implies: the
        files of a folder each by its own suffix."""
        if self.format:
            return self.format
        file = file or self.path
        suffix = PurePosixPath(file).suffix.lower()
        if suffix not in LABELED_DATA_SUFFIXES:
            raise ConfigError(f"{file}: cannot tell the format from the suffix {suffix!r}; set format")
        return LABELED_DATA_SUFFIXES[suffix]

    @model_validator(mode="after")
    def _scores_have_a_range(self) -> DataSource:
        if self.score_column is not None and self.score_range is None:
            raise ValueError("score_range: required with score_column, e.g. [0, 5]")
        if self.score_range is not None and not self.score_range[0] < self.score_range[1]:
            raise ValueError(f"score_range: {list(self.score_range)} is not [low, high] with low < high")
        if self.score_column is not None and self.negative_column is not None:
            raise ValueError("negative_column: scored pairs take no negative; drop score_column or negative_column")
        return self


class Augmentation(FrozenModel):
    """Training rows changed on the fly, differently in every pass (seeded): each row is augmented
    with probability ``rows``, by one of the operations whose rate is above 0, picked at random.

    Classification (EDA, Wei and Zou, 2019), each a share of the sentence's words: ``deletion``
    drops words, ``swap`` swaps pairs of words, ``insertion`` inserts words of other training
    sentences. Tagging, label-preserving: ``entity_substitution`` replaces each entity with this
    probability by another of the same type from the training data, ``case`` changes the
    sentence's case (lower, upper or title) with this probability.
    """

    rows: float = Field(default=0.5, gt=0, le=1)
    deletion: float = Field(default=0.0, ge=0, lt=1)
    swap: float = Field(default=0.0, ge=0, le=1)
    insertion: float = Field(default=0.0, ge=0, le=1)
    entity_substitution: float = Field(default=0.0, ge=0, le=1)
    case: float = Field(default=0.0, ge=0, le=1)


# the augmentation operations each task kind takes
AUGMENTATIONS = {"classification": ("deletion", "swap", "insertion"),
                 "tagging": ("entity_substitution", "case"), "similarity": ()}


class TaskConfig(FrozenModel):
    """One task: a name, a kind, and its training and evaluation data.

    A similarity task has no head: it trains the sentence embedding itself on sentence pairs.
    ``head_only_steps``: for the run's first N optimizer steps, this task's batches train its head
    only (the encoder gets no gradient from them), so a new head settles before it pulls the encoder.
    """

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    kind: Literal["classification", "tagging", "similarity"]
    train: DataSource
    eval: DataSource | None = None
    weight: float = Field(default=1.0, gt=0)
    learning_rate: float | None = Field(default=None, gt=0)
    head_only_steps: int = Field(default=0, ge=0)
    augment: Augmentation | None = None

    @model_validator(mode="after")
    def _similarity_eval_is_scored(self) -> TaskConfig:
        if self.kind == "similarity" and self.eval is not None and self.eval.score_column is None:
            raise ValueError("eval.score_column: a similarity task is scored on pairs with a score")
        if self.kind == "similarity" and self.head_only_steps:
            raise ValueError("head_only_steps: a similarity task has no head")
        return self

    @model_validator(mode="after")
    def _augmentation_fits_the_kind(self) -> TaskConfig:
        if self.augment is None:
            return self
        allowed = AUGMENTATIONS[self.kind]
        chosen = [name for names in AUGMENTATIONS.values() for name in names if getattr(self.augment, name)]
        wrong = [name for name in chosen if name not in allowed]
        if wrong:
            raise ValueError(f"augment.{wrong[0]}: not for a {self.kind} task (it takes {list(allowed) or 'none'})")
        if not chosen:
            raise ValueError(f"augment: no operation has a rate above 0 (a {self.kind} task takes {list(allowed)})")
        return self
