"""Typed, validated configuration: one YAML file plus ``--set key.sub=value`` overrides.

pydantic models (frozen, ``extra="forbid"``) stand in for the frozen dataclasses of the design: they
give the same immutability and, for free, errors that name the exact field (``tasks.1.train.path``),
which is what a user needs to fix a config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from mtl.errors import ConfigError
from mtl.task_config import DataSource, FrozenModel, TaskConfig

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
EMBEDDING_METRICS = "embedding"  # the key of embedding_eval's scores among the tasks' metrics


class ModelConfig(FrozenModel):
    """The shared encoder and how token vectors become one sentence vector."""

    encoder: str = DEFAULT_ENCODER
    pooling: Literal["mean", "cls", "max"] = "mean"
    normalize: bool = True
    max_length: int = Field(default=128, ge=8, le=8192)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    # continue from a trained model: a model folder (local or a URI) or a registered version
    # (models:/NAME@production); its encoder, and the heads of tasks with the same name and labels
    init_from: str | None = None
    # layer pruning before training: "every_other" (layers 1, 3, 5, ...), N (the lowest N) or a list
    keep_layers: Literal["every_other"] | int | list[int] | None = None


class GradualUnfreezing(FrozenModel):
    """Start with the encoder frozen; unfreeze its top layer, then one more, every ``every`` units."""

    every: int = Field(gt=0)
    unit: Literal["steps", "epochs"] = "epochs"


class EmbeddingPreservation(FrozenModel):
    """Keep the sentence embedding near the pretrained encoder's: every classification and tagging
    batch adds ``weight`` times a distance to what a frozen copy of the pretrained encoder gave its
    sentences. ``loss: cosine`` is the mean cosine distance of each sentence's embedding to its own;
    ``similarities`` the mean squared difference between the cosines of every two sentences of the
    batch, which keeps how sentences relate and leaves the space free to turn."""

    weight: float = Field(default=1.0, gt=0)
    loss: Literal["cosine", "similarities"] = "cosine"


class TrainConfig(FrozenModel):
    """How to train. ``batch_size`` is per worker; learning rates are peak rates after warm-up."""

    epochs: int = Field(default=3, ge=1)
    batch_size: int = Field(default=32, ge=1)
    eval_batch_size: int = Field(default=64, ge=1)
    num_workers: int = Field(default=1, ge=1)
    use_gpu: bool | None = None
    cpus_per_worker: float = Field(default=1, gt=0)
    # how Ray places the workers: PACK fills a node first, SPREAD puts them on different nodes
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    max_examples_per_task: int | None = Field(default=None, ge=1)
    # a worker whose share of a task has at most this many rows keeps it tokenized in memory after
    # reading it once (a few bytes per token); larger shares are read again by Ray Data every pass
    keep_in_memory_rows: int = Field(default=200_000, ge=0)
    seed: int = 42
    # task mixing: which task each batch comes from; all_tasks: every step a batch of every task
    mixing: Literal["proportional", "temperature", "round_robin", "all_tasks"] = "proportional"
    temperature: float = Field(default=2.0, gt=0)
    # loss weighting across tasks; gradnorm and pcgrad need every task's gradient in a step (all_tasks)
    loss_weighting: Literal["static", "uncertainty", "dwa", "gradnorm", "pcgrad"] = "static"
    dwa_temperature: float = Field(default=2.0, gt=0)
    gradnorm_alpha: float = Field(default=1.5, ge=0)
    gradnorm_learning_rate: float = Field(default=0.025, gt=0)
    # optimizer and schedule
    learning_rate: float = Field(default=5e-5, gt=0)
    head_learning_rate: float = Field(default=1e-3, gt=0)
    layer_decay: float = Field(default=1.0, gt=0, le=1)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    warmup_steps: int | None = Field(default=None, ge=0)
    schedule: Literal["linear", "cosine", "constant", "triangular", "cosine_restarts"] = "linear"
    # cyclical schedules: this many cycles after warm-up, the rate falling to cycle_min_ratio x its peak
    cycles: int = Field(default=4, ge=1)
    cycle_min_ratio: float = Field(default=0.1, ge=0, lt=1)
    grad_clip: float | None = Field(default=1.0, gt=0)
    grad_accumulation: int = Field(default=1, ge=1)
    mixed_precision: Literal["auto", "bf16", "no"] = "auto"
    # freezing
    freeze: Literal["none", "encoder", "embeddings"] = "none"
    freeze_layers: int = Field(default=0, ge=0)
    gradual_unfreezing: GradualUnfreezing | None = None
    preserve_embedding: EmbeddingPreservation | None = None
    # evaluation, checkpoints, faults
    eval_every_steps: int | None = Field(default=None, ge=1)
    patience: int | None = Field(default=None, ge=1)
    checkpoints_to_keep: int = Field(default=2, ge=1)
    max_failures: int = Field(default=2, ge=-1)
    log_every_steps: int = Field(default=20, ge=1)
    # held-out texts the best model answers once more at the end, to store the reference statistics
    # that an endpoint's drift scores compare with (mtl.serving.monitoring); 0 stores none
    reference_texts: int = Field(default=1000, ge=0)
    # where Ray Train keeps checkpoints (default <output>/ray): a local path or a URI (s3://, gs://)
    storage_path: str | None = None
    # a local storage_path that every node of the cluster mounts (NFS): allowed on several nodes
    storage_shared: bool = False

    @model_validator(mode="after")
    def _gradient_strategies_see_every_task(self) -> TrainConfig:
        if self.loss_weighting in ("gradnorm", "pcgrad") and self.mixing != "all_tasks":
            raise ValueError(f"loss_weighting: {self.loss_weighting} compares the tasks' gradients in each step; "
                             "set mixing: all_tasks")
        return self


class Distillation(FrozenModel):
    """Train the model (the student) to answer as ``teacher`` does on every task at once: each
    classification and tagging batch adds ``soft_weight`` times the soft-target loss against the
    teacher's heads at ``temperature``, ``embedding_weight`` times the squared distance to the
    teacher's sentence embedding and ``layer_weight`` times the distance of each encoder layer's
    output to the teacher layer's it learns; ``label_weight`` scales the task's own loss on its labels. The
    teacher is a model folder (local or a URI) or a registered version; it must have every task
    with a head, and the student its tokenizer (``jobs.distill`` builds such a student).

    ``corpus``: unlabeled text (a file, folder or glob in any format the label job reads, the text in
    ``corpus_text_column``) that the teacher labels on Ray Data before training; its rows join every
    task's training rows with the teacher's labels, and its soft targets as every batch's."""

    teacher: str
    temperature: float = Field(default=2.0, gt=0)
    soft_weight: float = Field(default=1.0, ge=0)
    label_weight: float = Field(default=1.0, ge=0)
    embedding_weight: float = Field(default=1.0, ge=0)
    layer_weight: float = Field(default=0.0, ge=0)
    corpus: str | None = None
    corpus_text_column: str = "text"


class MlflowConfig(FrozenModel):
    """Log the run to MLflow: params, every evaluation's metrics, plots and the model folder; with
    ``register_as``, register the best model as a new version of that registered model.
    ``tracking_uri`` defaults to ``$MLFLOW_TRACKING_URI``, else an embedded SQLite store
    (``runs/mlflow.db``), which needs no server."""

    tracking_uri: str | None = None
    experiment: str = "mtl"
    register_as: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")


class Config(FrozenModel):
    """A whole run: where it writes, the model, the tasks and how to train; ``embedding_eval``
    (scored sentence pairs, STS-B style) measures the sentence embedding at every evaluation."""

    output: str = "runs/default"
    model: ModelConfig = ModelConfig()
    tasks: list[TaskConfig] = Field(min_length=1)
    train: TrainConfig = TrainConfig()
    embedding_eval: DataSource | None = None
    distill: Distillation | None = None
    mlflow: MlflowConfig | None = None

    @property
    def tracking_uri(self) -> str | None:
        """The MLflow tracking URI the config names (None: MLflow's own default)."""
        return self.mlflow.tracking_uri if self.mlflow else None

    @model_validator(mode="after")
    def _task_names_unique(self) -> Config:
        names = [task.name for task in self.tasks]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"task names must be unique, repeated: {duplicates}")
        if self.embedding_eval is not None and self.embedding_eval.score_column is None:
            raise ValueError("embedding_eval.score_column: the embedding is scored on pairs with a score")
        if EMBEDDING_METRICS in names:
            raise ValueError(f"task name {EMBEDDING_METRICS!r} is where embedding_eval reports; rename the task")
        return self


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config, apply ``key.sub=value`` overrides, and validate it.

    Raises ConfigError naming the file and the offending field.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config error: no such file '{path}'")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config error: {path}: the top level must be a mapping")
    for override in overrides:
        apply_override(raw, override)
    return validate_config(raw, source=str(path))


def validate_config(raw: dict, source: str = "<config>") -> Config:
    """Validate a plain dict as a Config; errors name every bad field by its dotted path."""
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        problems = field_problems(error, top="<top>")
        raise ConfigError(f"config error: {source}: {problems}") from None


def field_problems(error: ValidationError, *, top: str) -> str:
    """Every problem of a validation error, each after its dotted field path (``top`` for the whole)."""
    return "; ".join(f"{'.'.join(str(part) for part in issue['loc']) or top}: {issue['msg']}"
                     for issue in error.errors())


def apply_override(raw: dict, override: str) -> None:
    """Set ``a.b.c=value`` (value parsed as YAML) in a nested dict; list items by index (``tasks.0.name``)."""
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"config error: --set {override!r}: expected key.sub=value")
    set_field(raw, key, yaml.safe_load(text))


def set_field(raw: dict, key: str, value) -> None:
    """Set the dotted field ``key`` (``train.learning_rate``, ``tasks.0.weight``) of a raw config dict."""
    parts = key.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        node = _child(node, part, ".".join(parts[: depth + 1]), create=True)
    _assign(node, parts[-1], value, key)


def _child(node, part: str, where: str, create: bool):
    if isinstance(node, list):
        index = _index(node, part, where)
        return node[index]
    if not isinstance(node, dict):
        raise ConfigError(f"config error: --set {where}: not a section")
    if part not in node and create:
        node[part] = {}
    return node[part]


def _assign(node, part: str, value, where: str) -> None:
    if isinstance(node, list):
        node[_index(node, part, where)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise ConfigError(f"config error: --set {where}: not a section")


def _index(node: list, part: str, where: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise ConfigError(f"config error: --set {where}: no list item {part!r} (list has {len(node)})")
    return int(part)
