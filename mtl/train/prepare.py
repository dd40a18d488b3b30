"""Driver-side data preparation: read every task's data, build label maps, tokenize, and check it all.

This runs before any worker starts, so a wrong path, a missing column or an eval label that the
training data never had is reported at once, naming the config field and the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from transformers import AutoTokenizer

from mtl.checkpoint import resolve_encoder
from mtl.config import Config, DataSource, TaskConfig
from mtl.data.features import Featurizer
from mtl.data.readers import read_rows
from mtl.errors import ConfigError, DataError
from mtl.tasks import TaskSpec


@dataclass
class PreparedData:
    """Label maps and tokenized training examples per task."""

    specs: list[TaskSpec]
    train_features: dict[str, list[dict]]


def prepare_data(config: Config) -> PreparedData:
    """Read, cap, label-map and tokenize the data of every task in ``config``."""
    featurizer = Featurizer(tokenizer=AutoTokenizer.from_pretrained(resolve_encoder(config.model.encoder)),
                            max_length=config.model.max_length)
    specs, train_features = [], {}
    for index, task in enumerate(config.tasks):
        rows = _read(task.train, task, f"tasks.{index}.train")
        rows = _cap(rows, config.train.max_examples_per_task, config.train.seed)
        spec = _spec(task, rows)
        specs.append(spec)
        make_features = (featurizer.classification_features if task.kind == "classification"
                         else featurizer.tagging_features)
        train_features[task.name] = make_features(rows, spec)
        if task.eval is not None:
            rows = _read(task.eval, task, f"tasks.{index}.eval")
            _check_labels(rows, spec, f"tasks.{index}.eval")  # the workers read it again, each its share
    return PreparedData(specs=specs, train_features=train_features)


def _read(source: DataSource, task: TaskConfig, field: str) -> list[dict]:
    try:
        return read_rows(source, task.kind)
    except (DataError, ConfigError) as error:
        raise DataError(f"config error: {field}: {error}") from None


def _cap(rows: list[dict], limit: int | None, seed: int) -> list[dict]:
    """A seeded random sample of ``limit`` rows (not the first ones: files are often sorted)."""
    if limit is None or len(rows) <= limit:
        return rows
    keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=limit, replace=False))
    return [rows[index] for index in keep]


def _spec(task: TaskConfig, rows: list[dict]) -> TaskSpec:
    if task.kind == "classification":
        seen = [row["label"] for row in rows]
    else:
        seen = [tag for row in rows for tag in row["tags"]]
    return TaskSpec.from_labels(task.name, task.kind, seen)


def _check_labels(rows: list[dict], spec: TaskSpec, field: str) -> None:
    try:
        for row in rows:
            for label in ([row["label"]] if spec.kind == "classification" else row["tags"]):
                spec.label_id(label, row["origin"])
    except DataError as error:
        raise DataError(f"config error: {field}: {error}") from None
