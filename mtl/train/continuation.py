"""Training that continues from a trained model (``model.init_from``): a released version trained
further on new data, as continuous training does.

The run starts from the model's fine-tuned encoder, and from the head of each task that has the
same name and kind there and whose training labels the head already knows (the head keeps its
label order, so a label is never remapped). A task new to the model gets a fresh head. New data
with a label the head does not know is an error: that is a new task, not a continuation.
"""

from __future__ import annotations

from dataclasses import replace

from safetensors.torch import load_file

from mtl import storage
from mtl.config import Config, ModelConfig
from mtl.data.features import Featurizer
from mtl.errors import ConfigError, DataError
from mtl.inference.model_folder import HEADS_FILE, ModelBundle, build_model, local_model_folder, read_model_description
from mtl.lifecycle import registry
from mtl.model.pruning import prune_layers
from mtl.tasks import TaskSpec


def resolve_init_from(config: Config) -> Config:
    """``config`` with ``model.init_from`` as a folder every worker can read (a registry reference
    resolved, a local path made absolute), checked against the model's settings."""
    reference = config.model.init_from
    if reference is None:
        return config
    folder = storage.absolute(registry.resolve_model(reference, config.tracking_uri))
    trained = read_model_description(folder)["model"]
    for field in ("encoder", "pooling", "normalize"):
        if trained[field] != getattr(config.model, field):
            raise ConfigError(f"config error: model.{field}: {getattr(config.model, field)!r}, but model.init_from "
                              f"{reference} was trained with {trained[field]!r}")
    return config.model_copy(update={"model": config.model.model_copy(update={"init_from": folder})})


def inherited_specs(specs: list[TaskSpec], folder: str) -> list[TaskSpec]:
    """The task specs to train: the model's own spec for each task it has, fresh ones for the rest."""
    trained = {task["name"]: TaskSpec.from_dict(task) for task in read_model_description(folder)["tasks"]}
    inherited = []
    for spec in specs:
        known = trained.get(spec.name)
        if known is None or known.kind != spec.kind:
            inherited.append(spec)
            continue
        unknown = sorted(set(spec.labels) - set(known.labels))
        if unknown:
            raise DataError(f"task '{spec.name}': the training data has labels {unknown} that the head of "
                            f"model.init_from ({folder}) does not know; train that task from scratch instead")
        inherited.append(known)
    return inherited


def initial_bundle(settings: ModelConfig, specs: list[TaskSpec], featurizer: Featurizer) -> ModelBundle:
    """The model a run starts from: the pretrained encoder with fresh heads, or with
    ``settings.init_from`` its encoder and the heads of the tasks it shares with ``specs``; with
    ``settings.keep_layers``, its encoder pruned to those layers."""
    bundle = _starting_bundle(settings, specs, featurizer)
    if settings.keep_layers is not None:
        prune_layers(bundle.model, settings.keep_layers)
    return bundle


def _starting_bundle(settings: ModelConfig, specs: list[TaskSpec], featurizer: Featurizer) -> ModelBundle:
    if settings.init_from is None:
        return build_model(settings, specs, featurizer=featurizer)
    folder = local_model_folder(settings.init_from)
    bundle = build_model(settings.model_copy(update={"encoder": str(folder)}), specs, featurizer=featurizer)
    trained = {task["name"]: TaskSpec.from_dict(task) for task in read_model_description(folder)["tasks"]}
    kept = {spec.name for spec in specs if trained.get(spec.name) == spec and spec.has_head}
    heads = {key: tensor for key, tensor in load_file(str(folder / HEADS_FILE)).items() if key.split(".")[0] in kept}
    bundle.model.heads.load_state_dict(heads, strict=False)
    return replace(bundle, settings=settings)
