"""The per-worker training loop: the only code that calls ``ray.train``.

Every worker runs ``train_loop_per_worker``: it builds the model, restores the last checkpoint
when there is one (a replaced worker, or a rerun with the same output), and follows the task
schedule of ``TaskMixer``, which is the same on every worker. Every decision that could differ
between ranks (early stopping, DWA's weights) is taken from values gathered from all ranks, so all
take the same branch; each worker evaluates its share of the eval data and the counts are summed.
Every worker calls ``ray.train.report``; rank 0 writes the checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import math
import resource
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import ray.train
import ray.train.torch
import torch
from torch import nn

from mtl.config import EMBEDDING_METRICS, Config, Distillation, EmbeddingPreservation
from mtl.data.features import Featurizer
from mtl.data.mixing import TaskMixer
from mtl.data.readers import read_rows
from mtl.errors import ConfigError
from mtl.inference.model_folder import ModelBundle, build_featurizer
from mtl.inference.predictor import Predictor
from mtl.model.distillation_losses import embedding_distance, layer_distance, soft_target_loss
from mtl.model.freezing import encoder_layers
from mtl.model.similarity import preservation_loss
from mtl.tasks import TaskSpec
from mtl.train.continuation import initial_bundle
from mtl.train.data import TaskData, TaskStream
from mtl.train.gradients import average_gradients, gradient_norm, pcgrad_backward
from mtl.train.optim import (
    FreezingPlan,
    build_optimizer,
    build_scheduler,
    parameter_groups,
)
from mtl.train.preservation import REFERENCE, ReferenceEmbedder
from mtl.train.state import RunState, TrainState, random_state, read_progress, set_random_state
from mtl.train.teacher import TEACHER_EMBEDDING, TEACHER_LAYERS, TEACHER_LOGITS, Teacher, load_teacher
from mtl.train.timing import AllReduceClock
from mtl.train.validation import add_counts, evaluation_counts, reports_from_counts
from mtl.train.weighting import LossWeighting

# note: Ray Train routes worker prints through logging and also tees them to stdout, so plain
# print() shows every line twice on the driver; logging shows it once
logger = logging.getLogger(__name__)

# loss weightings that combine the tasks' gradients of a step themselves (mtl.train.gradients)
GRADIENT_BALANCING = ("gradnorm", "pcgrad")


class TrainingModule(nn.Module):
    """The model and the loss weighting in one module, so that DDP keeps both in sync;
    ``preservation`` says how batches that carry a reference embedding keep to it."""

    def __init__(self, model: nn.Module, weighting: LossWeighting, preservation: EmbeddingPreservation | None = None,
                 distillation: Distillation | None = None):
        super().__init__()
        self.model = model
        self.weighting = weighting
        self.preservation = preservation
        self.distillation = distillation

    def forward(self, batches: dict[str, dict[str, torch.Tensor]], head_only: frozenset[str] = frozenset()
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """One batch per task -> (each task's loss, each task's loss to back-propagate: weighted, with
        its batch's preservation loss, and the preservation loss of each batch that had a reference).
        The tasks in ``head_only`` train their heads only: no gradient and no preservation. A batch
        with the teacher's outputs (distillation) has a task loss of its labels and the soft
        targets, and adds the distances to the teacher's embedding and layers to its objective."""
        losses, objectives, preservations = {}, {}, {}
        for task, batch in batches.items():
            labels = batch.pop("labels", None)
            reference = batch.pop(REFERENCE, None)
            teacher = {name: batch.pop(name) for name in (TEACHER_LOGITS, TEACHER_EMBEDDING, TEACHER_LAYERS)
                       if name in batch}
            if self.model.task_specs[task].kind == "similarity":
                losses[task] = self.model.similarity_loss(batch, scores=labels)
                objectives[task] = self.weighting(task, losses[task])
                continue
            output = self.model(**batch, tasks=[task], labels={task: labels}, train_encoder=task not in head_only,
                                layer_states=TEACHER_LAYERS in teacher)
            if teacher:
                losses[task], objectives[task] = self._distilled(task, output, labels, batch["attention_mask"],
                                                                 teacher)
            else:
                losses[task] = output.losses[task]
                objectives[task] = self.weighting(task, losses[task])
            if reference is not None and task not in head_only:
                preservations[task] = preservation_loss(output.embeddings, reference, self.preservation.loss)
                objectives[task] = objectives[task] + self.preservation.weight * preservations[task]
        return losses, objectives, preservations

    def _distilled(self, task: str, output, labels: torch.Tensor, attention_mask: torch.Tensor,
                   teacher: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        settings = self.distillation
        soft = soft_target_loss(output.logits[task], teacher[TEACHER_LOGITS], settings.temperature, labels)
        loss = settings.label_weight * output.losses[task] + settings.soft_weight * soft
        objective = self.weighting(task, loss)
        objective = objective + settings.embedding_weight * embedding_distance(output.embeddings,
                                                                               teacher[TEACHER_EMBEDDING])
        if TEACHER_LAYERS in teacher:
            objective = objective + settings.layer_weight * layer_distance(output.layer_states,
                                                                           teacher[TEACHER_LAYERS], attention_mask)
        return loss, objective


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
    progress: _Progress
    allreduce_clock: AllReduceClock | None   # with several workers
    teacher: Teacher | None = None           # distillation's, frozen

    @property
    def state(self) -> TrainState:
        return self.checkpointed.progress


def train_loop_per_worker(loop_config: dict) -> None:
    """Train on this worker's share of the data; ``loop_config`` holds the config, the task specs and
    where each task's data is (``mtl.train.data.TaskData``)."""
    worker = _set_up(loop_config)
    settings, state = worker.config.train, worker.state
    while state.epoch < settings.epochs and not state.stopped_early:
        steps = worker.mixer.steps(state.epoch)
        worker.module.train()
        while state.position < len(steps):
            end_of_epoch = _train_step(worker, steps)
            if end_of_epoch is None:  # gradients accumulated, no optimizer step yet
                continue
            if end_of_epoch or (settings.eval_every_steps and state.step % settings.eval_every_steps == 0):
                _evaluate_and_checkpoint(worker)
                worker.module.train()
            if end_of_epoch or state.stopped_early:
                break


def _set_up(loop_config: dict) -> Worker:
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
    worker.state.placements.append(_worker_nodes(world_size))
    worker.state.devices.append(_device_description(worker.device, config.train.mixed_precision))
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
                  progress=_Progress(rank=rank, world_size=world_size, total_steps=total_steps,
                                     every=settings.log_every_steps, board=board))


def _restore(checkpointed: RunState, folder: Path, rank: int) -> None:
    """A checkpoint of this run loaded into ``checkpointed``, and this rank's random state as it was then."""
    random_states = checkpointed.load(folder)
    if rank < len(random_states):  # the same number of workers as when it was saved
        set_random_state(random_states[rank])
    logger.info("[mtl] resumed from checkpoint: epoch %d, step %d", checkpointed.progress.epoch,
                checkpointed.progress.step)


def _train_step(worker: Worker, steps: list[tuple[str, ...]]) -> bool | None:
    """Forward and backward on the next step's batches (one task's, or one of every task), and an
    optimizer step when the gradient accumulation is complete. Returns None when no step was taken,
    else whether the epoch ended."""
    settings, state = worker.config.train, worker.state
    started = time.perf_counter()
    batches = {}
    for task in steps[state.position]:
        state.draws[task] = state.draws.get(task, 0) + 1
        batches[task] = {name: tensor.to(worker.device) for name, tensor in
                         worker.bundle.featurizer.collate(worker.streams[task].next_batch()).items()}
        if worker.teacher is not None and worker.streams[task].spec.has_head:
            with _autocast(settings.mixed_precision, worker.device):
                worker.teacher.annotate(task, batches[task], worker.bundle.featurizer.input_names)
    sentences = sum(len(batch["input_ids"]) for batch in batches.values())
    state.position += 1
    stepping = state.position % settings.grad_accumulation == 0 or state.position == len(steps)
    balancing = settings.loss_weighting in GRADIENT_BALANCING
    synced = stepping and not balancing  # balancing averages the gradients itself, once they are whole
    sync = contextlib.nullcontext() if synced or worker.world_size == 1 else worker.module.no_sync()
    with sync:  # one block: DDP's no_sync() can be entered only once
        with _autocast(settings.mixed_precision, worker.device):
            losses, objectives, preservations = worker.module(batches, head_only=_head_only(worker))
        _backward(worker, losses, objectives)
    _add_losses(state, {task: loss.item() for task, loss in losses.items()},
                {task: loss.item() for task, loss in preservations.items()})
    state.train_sentences += sentences
    if stepping:
        if balancing:
            average_gradients(list(worker.module.parameters()), worker.world_size)
        _optimizer_step(worker)
    state.train_seconds += time.perf_counter() - started
    if worker.allreduce_clock:
        state.allreduce_seconds += worker.allreduce_clock.take()
    state.peak_worker_private_rss = max(state.peak_worker_private_rss, _private_rss())
    if not stepping:
        return None
    worker.progress.log(state, settings.epochs)
    end_of_epoch = state.position == len(steps)
    if end_of_epoch:
        state.epoch, state.position = state.epoch + 1, 0
        # every rank must take the same weights: from the losses of all ranks, not its own
        worker.checkpointed.weighting.end_epoch(_mean_across_ranks(state.epoch_loss_sums, state.epoch_loss_counts))
        state.epoch_loss_sums, state.epoch_loss_counts = {}, {}
    return end_of_epoch


def _head_only(worker: Worker) -> frozenset[str]:
    """The tasks whose batches still train only their heads (``head_only_steps``)."""
    return frozenset(task.name for task in worker.config.tasks if worker.state.step < task.head_only_steps)


def _backward(worker: Worker, losses: dict[str, torch.Tensor], objectives: dict[str, torch.Tensor]) -> None:
    """The step's gradients, added to ``.grad``: PCGrad's projected sum, or the summed objectives'
    (after GradNorm's weight gradient, taken from the same graph)."""
    settings, state = worker.config.train, worker.state
    scale = 1 / settings.grad_accumulation
    model, weighting = worker.bundle.model, worker.checkpointed.weighting
    if settings.loss_weighting == "pcgrad":
        shared = [parameter for parameter in model.encoder.parameters() if parameter.requires_grad]
        own = [parameter for module in (model.heads, weighting) for parameter in module.parameters()
               if parameter.requires_grad]
        order = np.random.default_rng([settings.seed, state.epoch, state.position, worker.rank])
        pcgrad_backward(objectives, shared, own, order, scale)
        return
    if settings.loss_weighting == "gradnorm":
        _add_gradnorm_gradient(worker, losses, scale)
    (sum(objectives.values()) * scale).backward()


def _add_gradnorm_gradient(worker: Worker, losses: dict[str, torch.Tensor], scale: float) -> None:
    """GradNorm's gradient for the task weights, from each task's gradient norm on the top encoder layer."""
    weighting = worker.checkpointed.weighting
    values = {task: loss.item() for task, loss in losses.items()}
    if not weighting.initial_losses.all():  # the same on every rank: set once, and restored from checkpoints
        weighting.start_gradnorm(_mean_across_ranks(values, dict.fromkeys(values, 1)))
    shared_layer = [parameter for parameter in encoder_layers(worker.bundle.model)[-1].parameters()
                    if parameter.requires_grad]
    if not shared_layer:
        raise ConfigError("config error: train.loss_weighting: gradnorm measures gradients on the top encoder "
                          "layer, which is frozen (train.freeze)")
    norms = {task: gradient_norm(loss, shared_layer) for task, loss in losses.items()}
    gradient = weighting.gradnorm_gradient(values, norms) * scale
    weights = weighting.task_weights
    weights.grad = gradient if weights.grad is None else weights.grad + gradient


def _add_losses(state: TrainState, losses: dict[str, float], preservations: dict[str, float]) -> None:
    """The step's losses into the sums logged at the next evaluation and used by DWA at the epoch's end;
    the preservation loss is logged beside the tasks' (loss weighting never sees it)."""
    for sums, counts in ((state.loss_sums, state.loss_counts), (state.epoch_loss_sums, state.epoch_loss_counts)):
        for task, loss in losses.items():
            sums[task] = sums.get(task, 0.0) + loss
            counts[task] = counts.get(task, 0) + 1
    for loss in preservations.values():
        state.loss_sums[EMBEDDING_METRICS] = state.loss_sums.get(EMBEDDING_METRICS, 0.0) + loss
        state.loss_counts[EMBEDDING_METRICS] = state.loss_counts.get(EMBEDDING_METRICS, 0) + 1


def _optimizer_step(worker: Worker) -> None:
    run, state = worker.checkpointed, worker.state
    for parameter in worker.freezing.still_frozen(worker.bundle.model, state.step, state.epoch):
        parameter.grad = None
    if worker.config.train.grad_clip:
        torch.nn.utils.clip_grad_norm_(worker.module.parameters(), worker.config.train.grad_clip)
    run.optimizer.step()
    run.weighting.renormalize()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    state.step += 1


def _worker_nodes(world_size: int) -> list[str]:
    """The Ray node id of every rank, so the job can report where its workers ran."""
    node = ray.get_runtime_context().get_node_id()
    if world_size == 1 or not torch.distributed.is_initialized():
        return [node]
    nodes: list[str | None] = [None] * world_size
    torch.distributed.all_gather_object(nodes, node)
    return nodes


def _uses_bf16(mode: str, device: torch.device) -> bool:
    """bf16 where asked, or on 'auto' where the GPU supports it; CPU stays in float32."""
    bf16_gpu = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return mode == "bf16" or (mode == "auto" and bf16_gpu)


def _autocast(mode: str, device: torch.device):
    if _uses_bf16(mode, device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _device_description(device: torch.device, mixed_precision: str) -> str:
    """What this worker trains on, for the job's report: a GPU run that fell back to the CPU shows."""
    name = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
    return f"{name}, {'bf16 autocast' if _uses_bf16(mixed_precision, device) else 'float32'}"


def _mean_losses(state: TrainState) -> dict[str, float]:
    """This rank's mean training loss per task since the last evaluation."""
    return {task: state.loss_sums[task] / state.loss_counts[task] for task in state.loss_sums}


def _peak_rss() -> int:
    """This process's largest resident memory so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _private_rss() -> int:
    """This process's resident memory now, less shared memory (the pages of Ray's object store that
    it has read blocks from, which belong to the node's store), in bytes; 0 where /proc is absent."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    sizes = dict(line.split(":", 1) for line in status.splitlines() if line.startswith(("RssAnon", "RssFile")))
    return sum(int(size.split()[0]) for size in sizes.values()) * 1024


def _gather(value) -> list:
    """``value`` of every rank, in rank order (every rank must call this, and gets the same list)."""
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return [value]
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def _mean_across_ranks(sums: dict[str, float], counts: dict[str, int]) -> dict[str, float]:
    """The mean per task over the losses of every rank, the same on every rank."""
    total_sums, total_counts = _sum_across_ranks(sums, counts)
    return {task: total_sums[task] / total_counts[task] for task in total_sums}


def _sum_across_ranks(sums: dict[str, float], counts: dict[str, int]) -> tuple[dict, dict]:
    total_sums, total_counts = {}, {}
    for rank_sums, rank_counts in _gather((sums, counts)):
        for task, value in rank_sums.items():
            total_sums[task] = total_sums.get(task, 0.0) + value
            total_counts[task] = total_counts.get(task, 0) + rank_counts[task]
    return total_sums, total_counts


def _hand_epoch_losses_to_rank_0(state: TrainState, rank: int) -> None:
    """Rank 0 alone writes checkpoints: it takes the epoch's loss totals of every rank (the others
    keep none), so that a resumed run's end-of-epoch DWA update sums what the first run's would."""
    totals = _sum_across_ranks(state.epoch_loss_sums, state.epoch_loss_counts)
    state.epoch_loss_sums, state.epoch_loss_counts = totals if rank == 0 else ({}, {})


def _eval_share(config: Config, rank: int, world_size: int) -> dict[str, list[dict]]:
    """This rank's share of each task's eval data (and of ``embedding_eval``), read from its files:
    every ``world_size``-th row."""
    sources = {task.name: (task.eval, task.kind) for task in config.tasks if task.eval}
    if config.embedding_eval:
        sources[EMBEDDING_METRICS] = (config.embedding_eval, "similarity")
    return {name: read_rows(source, kind)[rank::world_size] for name, (source, kind) in sources.items()}


def _evaluate_and_checkpoint(worker: Worker) -> None:
    """Evaluate, update early stopping, and report the metrics with a checkpoint (rank 0 writes it;
    every rank reports, or the others wait for it forever)."""
    config, state = worker.config, worker.state
    train_losses = _mean_across_ranks(state.loss_sums, state.loss_counts)
    state.loss_sums, state.loss_counts = {}, {}
    if worker.eval_rows:
        # each rank scores its share; the summed counts give every rank the same, exact metrics
        predictor = Predictor(worker.bundle, device=worker.device, batch_size=config.train.eval_batch_size)
        counts = add_counts(_gather(evaluation_counts(predictor, worker.eval_rows)))
        results = reports_from_counts(counts, predictor.task_specs)
    else:  # no eval data: lower training loss (of all ranks, so that all decide alike) is better
        results = {"tasks": {}, "combined": -sum(train_losses.values())}
    _record_evaluation(worker, results, train_losses)
    _hand_epoch_losses_to_rank_0(state, worker.rank)
    state.peak_worker_rss = max(state.peak_worker_rss, *_gather(_peak_rss()))
    state.peak_worker_private_rss = max(_gather(state.peak_worker_private_rss))
    reports = {**results["tasks"], **({EMBEDDING_METRICS: results["embedding"]} if "embedding" in results else {})}
    metrics = {"epoch": state.epoch, "step": state.step, "combined": results["combined"],
               **{f"{task}/{name}": value for task, report in reports.items()
                  for name, value in report.items() if isinstance(value, (int, float))},
               **{f"{task}/train_loss": value for task, value in train_losses.items()}}
    random_states = _gather(random_state())  # every rank's, written by rank 0
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if worker.rank == 0:
            metadata = {"trained_at": datetime.now(timezone.utc).isoformat(), "epoch": state.epoch,
                        "step": state.step, "metrics": results, "config": config.model_dump()}
            worker.checkpointed.save(Path(folder), specs=worker.specs, metadata=metadata,
                                     random_states=random_states)
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report(metrics, checkpoint=checkpoint)


def _record_evaluation(worker: Worker, results: dict, train_losses: dict[str, float]) -> None:
    """Early stopping's count, and the evaluation in the run's history."""
    state, patience = worker.state, worker.config.train.patience
    combined = results["combined"]
    if combined > state.best:
        state.best, state.evals_without_improvement = combined, 0
    else:
        state.evals_without_improvement += 1
    state.stopped_early = bool(patience and state.evals_without_improvement >= patience
                               and state.epoch < worker.config.train.epochs)
    state.history.append({"epoch": state.epoch, "step": state.step, "combined": combined,
                          "train_loss": train_losses, "weights": worker.checkpointed.weighting.weights(),
                          "weights_by_rank": _gather(worker.checkpointed.weighting.weights()),
                          "tasks": results["tasks"], **({"embedding": results["embedding"]}
                                                         if "embedding" in results else {})})


class _Progress:
    """Rank 0 posts each step to the driver's progress board (``mtl.runtime.progress``), when it has one, and
    logs step, loss per task, throughput and ETA every ``every`` steps (in Ray's worker logs)."""

    def __init__(self, *, rank: int, world_size: int, total_steps: int, every: int, board=None):
        self.rank, self.world_size, self.total_steps, self.every = rank, world_size, total_steps, every
        self.board = board if rank == 0 else None
        self.started, self.first_step, self.posted = time.perf_counter(), None, 0.0

    def log(self, state: TrainState, epochs: int) -> None:
        if self.first_step is None:
            self.first_step = state.step - 1
        rate = state.train_sentences * self.world_size / max(state.train_seconds, 1e-9)
        if self.board is not None and (time.perf_counter() - self.posted > 0.5 or state.step == self.total_steps):
            self.posted = time.perf_counter()
            self.board.set.remote(state.step, self.total_steps,
                                  f"epoch {state.epoch + 1}/{epochs}, {rate:.1f} sentences/s")
        if self.rank != 0 or (state.step % self.every and state.step != self.total_steps):
            return
        elapsed = time.perf_counter() - self.started
        eta = elapsed / (state.step - self.first_step) * (self.total_steps - state.step)
        losses = " ".join(f"{task} {value:.3f}" for task, value in _mean_losses(state).items())
        logger.info("[mtl] epoch %d/%d step %d/%d | loss %s | %.1f sentences/s | eta %.0fs",
                    state.epoch + 1, epochs, state.step, self.total_steps, losses, rate, eta)
