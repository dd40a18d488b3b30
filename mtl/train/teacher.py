"""The teacher of a distillation run (``distill:``): checked on the driver, loaded on each worker,
and run on each batch the student trains on.

The teacher answers the student's own batch, so the two must tokenize alike (the same vocabulary);
its outputs travel with the batch (``TEACHER_LOGITS``, ``TEACHER_EMBEDDING``, ``TEACHER_LAYERS``)
to the training module, which adds the distillation losses (``mtl.model.distillation_losses``). Unlabeled text
(``distill.corpus``) is labeled by the teacher first, by the label job's own pipeline on Ray Data,
and read back as more training rows of each task (``teacher_labeled_sources``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AutoConfig, AutoTokenizer

from mtl import storage
from mtl.config import Config, Distillation
from mtl.errors import ConfigError, DataError
from mtl.inference.model_folder import (
    build_featurizer,
    encoder_config,
    load_model_folder,
    local_model_folder,
    read_model_description,
    resolve_encoder,
)
from mtl.labeling.options import LabelOptions
from mtl.labeling.pipeline import run_labeling
from mtl.lifecycle import registry
from mtl.model.distillation_losses import teacher_layers
from mtl.model.freezing import encoder_layers
from mtl.model.multitask import MultiTaskModel
from mtl.model.pruning import kept_layers
from mtl.task_config import DataSource
from mtl.tasks import TaskSpec
from mtl.train.continuation import inherited_specs

TEACHER_LOGITS = "teacher_logits"
TEACHER_EMBEDDING = "teacher_embedding"
TEACHER_LAYERS = "teacher_layers"
TEACHER_LABELS = "teacher_labels"   # the folder under the run's output where the labeled corpus goes


def resolve_teacher(config: Config) -> Config:
    """``config`` with ``distill.teacher`` as a folder every worker can read, checked against the student."""
    settings = config.distill
    folder = storage.absolute(registry.resolve_model(settings.teacher, config.tracking_uri))
    student_tokenizer = build_featurizer(config.model).tokenizer
    if AutoTokenizer.from_pretrained(str(local_model_folder(folder))).get_vocab() != student_tokenizer.get_vocab():
        raise ConfigError(f"config error: distill.teacher: {settings.teacher} tokenizes with another vocabulary "
                          f"than the student ({config.model.encoder}); the teacher answers the student's own "
                          "batches, so they must share one (a student made from the teacher by jobs.distill does)")
    teacher = encoder_config(folder)
    student = AutoConfig.from_pretrained(resolve_encoder(config.model.init_from or config.model.encoder))
    for field in ("embedding_weight", "layer_weight"):
        if getattr(settings, field) and teacher.hidden_size != student.hidden_size:
            raise ConfigError(f"config error: distill.{field}: the student's encoder is {student.hidden_size} wide "
                              f"and the teacher's {teacher.hidden_size}; set it to 0 to distil the heads only")
    if settings.layer_weight:
        depth = student.num_hidden_layers
        if config.model.keep_layers is not None:
            depth = len(kept_layers(config.model.keep_layers, depth))
        try:
            teacher_layers(depth, teacher.num_hidden_layers)
        except ValueError as error:
            raise ConfigError(f"config error: distill.layer_weight: {error}") from None
    return config.model_copy(update={"distill": settings.model_copy(update={"teacher": folder})})


def teacher_labeled_sources(config: Config) -> dict[str, dict[str, DataSource]]:
    """Label ``distill.corpus`` with the (resolved) teacher into ``<output>/teacher_labels`` and
    return, per classification and tagging task, that output as a source of its training rows
    (rows the teacher could not label are passed over). The corpus is labeled anew on every run:
    the teacher may have changed since the last. Its path is taken as the config's data paths are
    (``trainer._paths_for_workers``): relative only in a job whose working folder every node has."""
    settings = config.distill
    output = storage.absolute(storage.join(config.output, TEACHER_LABELS))
    read_back = {"classification": lambda name: {"label_column": name},
                 "tagging": lambda name: {"spans_column": name}}
    tasks = [task for task in config.tasks if task.kind in read_back]
    options = LabelOptions(model=settings.teacher, input=settings.corpus,
                           text_column=settings.corpus_text_column, output=output, embedding=False,
                           tasks=tuple(task.name for task in tasks), overwrite=True,
                           use_gpu=config.train.use_gpu, output_shared=config.train.storage_shared)
    try:
        run_labeling(options)
    except (ValueError, FileNotFoundError, DataError) as error:
        raise ConfigError(f"config error: distill.corpus: {error}") from None
    labeled = storage.join(output, "*.parquet")
    return {task.name: {"distill.corpus": DataSource(
                path=labeled, format="parquet", text_column=settings.corpus_text_column, skip_unlabeled=True,
                **read_back[task.kind](task.name))}
            for task in tasks}


def teacher_specs(specs: list[TaskSpec], folder: str) -> list[TaskSpec]:
    """The task specs in the teacher's label order; every task with a head must be one of the teacher's."""
    inherited = inherited_specs(specs, folder)
    taught = {task["name"]: task["kind"] for task in read_model_description(folder)["tasks"]}
    missing = [spec.name for spec in inherited if spec.has_head and taught.get(spec.name) != spec.kind]
    if missing:
        raise ConfigError(f"config error: distill.teacher: {folder} has no {missing} task of that kind to learn "
                          f"from (it has {taught})")
    return inherited


@dataclass
class Teacher:
    """The frozen teacher on a worker, and the teacher layer each student layer learns (``None``:
    the layers are not distilled)."""

    model: MultiTaskModel
    layers: list[int] | None = None

    @torch.no_grad()
    def annotate(self, task: str, batch: dict[str, torch.Tensor], input_names: list[str]) -> None:
        """The teacher's logits for ``task``, its sentence embedding and the layers' outputs the
        student learns, added to the student's batch."""
        output = self.model(**{name: batch[name] for name in input_names if name in batch}, tasks=[task],
                            layer_states=self.layers is not None)
        batch[TEACHER_LOGITS] = output.logits[task]
        batch[TEACHER_EMBEDDING] = output.embeddings
        if self.layers is not None:
            batch[TEACHER_LAYERS] = torch.stack([output.layer_states[layer] for layer in self.layers])


def load_teacher(settings: Distillation, student: MultiTaskModel, device: torch.device) -> Teacher:
    """The teacher of ``settings`` (resolved), frozen, in eval mode (no dropout), on ``device``."""
    model = load_model_folder(settings.teacher).model.to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad = False
    layers = None
    if settings.layer_weight:
        layers = teacher_layers(len(encoder_layers(student)), len(encoder_layers(model)))
    return Teacher(model=model, layers=layers)


def student_config(config: Config, teacher: str, *, student: str | None = None,
                   keep_layers: str | int | list[int] = "every_other", corpus: str | None = None) -> Config:
    """``config`` set to distil ``teacher`` into a student: the encoder ``student`` (a name or a
    path), else the teacher itself with only ``keep_layers`` of its layers, starting from its heads;
    ``corpus``, when given, is the unlabeled text the teacher labels for it."""
    distill = (config.distill or Distillation(teacher=teacher)).model_copy(
        update={"teacher": teacher, **({"corpus": corpus} if corpus else {})})
    if student:
        model = config.model.model_copy(update={"encoder": student, "init_from": None, "keep_layers": None})
    else:
        trained = read_model_description(registry.resolve_model(teacher, config.tracking_uri))["model"]
        model = config.model.model_copy(update={
            **{field: trained[field] for field in ("encoder", "pooling", "normalize")},
            "init_from": teacher, "keep_layers": keep_layers})
    return config.model_copy(update={"model": model, "distill": distill})
