"""One rank's training run, set up: its data streams, its model on its device, what updates it, and
the last checkpoint loaded into both."""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import ray.train
import ray.train.torch
import torch
from torch import nn

from mtl.config import EMBEDDING_METRICS, Config
from mtl.data.features import Featurizer
from mtl.data.mixing import TaskMixer
from mtl.data.readers import read_rows
from mtl.inference.model_folder import ModelBundle, build_featurizer
from mtl.tasks import TaskSpec
from mtl.train.collectives import worker_nodes
from mtl.train.continuation import initial_bundle
from mtl.train.data_plan import TaskData
from mtl.train.device import device_description
from mtl.train.objective import TrainingModule
from mtl.train.optim import (
    FreezingPlan,
    build_optimizer,
    build_scheduler,
    parameter_groups,
)
from mtl.train.preservation import ReferenceEmbedder
from mtl.train.state import RunState, TrainState, read_progress, set_random_state
from mtl.train.step_progress import StepProgress
from mtl.train.stream import TaskStream
from mtl.train.teacher import Teacher, load_teacher
from mtl.train.timing import AllReduceClock
from mtl.train.weighting import LossWeighting

# note: Ray Train routes worker prints through logging and also tees them to stdout, so plain
# print() shows every line twice on the driver; logging shows it once
logger = logging.getLogger(__name__)


@dataclass
class Worker:
    """One rank's training: the model, what updates it, its data and where the run is."""

    config: Config
    specs: list[TaskSpec]
    eval_rows: dict              # this rank's share of each task's eval data
    rank: int
    world_size: int
    device: torch.device
    bundle: ModelBundle
    module: nn.Module            # the TrainingModule, wrapped for DDP
    checkpointed: RunState
    freezing: FreezingPlan
    streams: dict[str, TaskStream]
    mixer: TaskMixer
    progress: StepProgress
    allreduce_clock: AllReduceClock | None   # with several workers
    teacher: Teacher | None = None           # distillation's, frozen

    @property
    def state(self) -> TrainState:
        return self.checkpointed.progress


def set_up(loop_config: dict) -> Worker:
    """This worker's data streams, then its model on its device, its optimizer, and the last
    checkpoint (if any) loaded into both: an optimizer state loaded before the model moves would
    stay on the CPU. The streams come first so that their first reads run while the model loads."""
    config = Config.model_validate(loop_config["config"])
    specs = [TaskSpec.from_dict(spec) for spec in loop_config["specs"]]
    plans = {name: TaskData(**plan) for name, plan in loop_config["data"].items()}
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    checkpoint = ray.train.get_checkpoint()
    with checkpoint.as_directory() if checkpoint else contextlib.nullcontext() as folder:
        folder = Path(folder) if folder else None
        featurizer = build_featurizer(config.model)
        reference = (ReferenceEmbedder.pretrained(config.model, featurizer, ray.train.torch.get_device())
                     if config.train.preserve_embedding else None)
        # each task's stream starts where the run stands in it: the batches already drawn are skipped
        draws = read_progress(folder).draws if folder else {}
        streams = {spec.name: TaskStream(plans[spec.name], spec, featurizer=featurizer,
                                         batch_size=config.train.batch_size, seed=config.train.seed,
                                         task_index=index, rank=rank, world_size=world_size,
                                         draws=draws.get(spec.name, 0),
                                         keep_in_memory_rows=config.train.keep_in_memory_rows,
                                         reference=reference, augment=config.tasks[index].augment)
                   for index, spec in enumerate(specs)}
        worker = _worker(config, specs, featurizer, streams, rank, world_size, board=loop_config.get("progress"))
        if folder:
            _restore(worker.checkpointed, folder, rank)
    if rank != 0:  # the epoch's loss totals of every rank are rank 0's to carry
        worker.state.epoch_loss_sums, worker.state.epoch_loss_counts = {}, {}
    worker.state.placements.append(worker_nodes(world_size))
    worker.state.devices.append(device_description(worker.device, config.train.mixed_precision))
    return worker


def _worker(config: Config, specs: list[TaskSpec], featurizer: Featurizer, streams: dict[str, TaskStream],
            rank: int, world_size: int, board=None) -> Worker:
    """The model on this worker's device and everything that trains it, as a new run."""
    settings, worker_device = config.train, ray.train.torch.get_device()
    torch.manual_seed(settings.seed)  # the same initial weights on every rank
    bundle = initial_bundle(config.model, specs, featurizer)
    torch.manual_seed(settings.seed + 1 + rank)  # dropout of its own on each rank
    weighting = LossWeighting(strategy=settings.loss_weighting, tasks=[spec.name for spec in specs],
                              static_weights={task.name: task.weight for task in config.tasks},
                              dwa_temperature=settings.dwa_temperature, gradnorm_alpha=settings.gradnorm_alpha)
    freezing = FreezingPlan(settings)
    freezing.apply_static(bundle.model)
    mixer = TaskMixer(batch_counts={name: stream.batches_per_pass for name, stream in streams.items()},
                      strategy=settings.mixing, temperature=settings.temperature, seed=settings.seed)
    module = ray.train.torch.prepare_model(
        TrainingModule(bundle.model, weighting, settings.preserve_embedding, config.distill),
        # note: a step may run one task's head, so the other heads get no gradient that step
        parallel_strategy_kwargs={"find_unused_parameters": True},
    )
    head_rates = {task.name: task.learning_rate for task in config.tasks if task.learning_rate}
    optimizer = build_optimizer(parameter_groups(bundle.model, weighting, settings, head_rates))
    total_steps = math.ceil(mixer.steps_per_epoch / settings.grad_accumulation) * settings.epochs
    checkpointed = RunState(bundle=bundle, weighting=weighting, optimizer=optimizer,
                            scheduler=build_scheduler(optimizer, settings, total_steps), progress=TrainState())
    return Worker(config=config, specs=specs, eval_rows=_eval_share(config, rank, world_size), rank=rank,
                  world_size=world_size, device=worker_device, bundle=bundle, module=module,
                  checkpointed=checkpointed, freezing=freezing, streams=streams, mixer=mixer,
                  allreduce_clock=AllReduceClock.attach(module),
                  teacher=load_teacher(config.distill, bundle.model, worker_device) if config.distill else None,
                  progress=StepProgress(rank=rank, world_size=world_size, total_steps=total_steps,
                                     every=settings.log_every_steps, board=board))


def _restore(checkpointed: RunState, folder: Path, rank: int) -> None:
    """A checkpoint of this run loaded into ``checkpointed``, and this rank's random state as it was then."""
    random_states = checkpointed.load(folder)
    if rank < len(random_states):  # the same number of workers as when it was saved
        set_random_state(random_states[rank])
    logger.info("[mtl] resumed from checkpoint: epoch %d, step %d", checkpointed.progress.epoch,
                checkpointed.progress.step)


def _eval_share(config: Config, rank: int, world_size: int) -> dict[str, list[dict]]:
    """This rank's share of each task's eval data (and of ``embedding_eval``), read from its files:
    every ``world_size``-th row."""
    sources = {task.name: (task.eval, task.kind) for task in config.tasks if task.eval}
    if config.embedding_eval:
        sources[EMBEDDING_METRICS] = (config.embedding_eval, "similarity")
    return {name: read_rows(source, kind)[rank::world_size] for name, (source, kind) in sources.items()}
