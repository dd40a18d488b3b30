"""The Ray edge of training: a TorchTrainer whose workers stream their data from Ray Data, then the
best model exported.

``fit`` counts and checks the data on the driver (label maps, rows per rank: ``mtl.train.data_plan``),
runs ``train_loop_per_worker`` on every worker, each reading and tokenizing its own share on Ray
Data, and copies the best checkpoint's model folder to ``<output>/best`` with a metrics file and plots.
A run writes its checkpoints under ``<output>/ray`` (or ``train.storage_path``) with a fixed name,
so running it again with the same output resumes it instead of starting over. ``output`` and
``storage_path`` may be local paths or URIs (``s3://...``); on a cluster of several nodes the
checkpoints must be on storage every node reaches, or a worker restarted on another node cannot
restore them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from mtl import storage
from mtl.config import Config
from mtl.errors import ConfigError
from mtl.evaluation.plots import plot_confusion_matrices, plot_learning_curves
from mtl.inference.model_folder import SPEC_FILE
from mtl.inference.reference import reference_texts, store_reference
from mtl.lifecycle.tracking import TrackedRun, log_training
from mtl.runtime.progress import progress_bar
from mtl.task_config import DataSource
from mtl.train.continuation import inherited_specs, resolve_init_from
from mtl.train.data_plan import plan_training_data
from mtl.train.loop import train_loop_per_worker
from mtl.train.run_report import metrics_table, write_metrics
from mtl.train.state import MODEL_DIR, read_progress
from mtl.train.teacher import resolve_teacher, teacher_labeled_sources, teacher_specs

RUN_NAME = "mtl-train"


@dataclass
class TrainingSummary:
    best_model: str     # local path or URI, as ``output`` was given
    metrics_file: str
    plots: list[str]
    best: dict
    history: list[dict]
    steps: int
    resumes: int
    worker_sentences_per_second: float   # one worker's training rate; the job's is about W times it
    seconds_per_step: float              # rank 0's, from taking a batch to the optimizer step
    allreduce_seconds_per_step: float    # of which a gradient all-reduce was in flight
    placements: list[list[str]]   # the Ray node id of each rank, per (re)start of the workers
    devices: list[str]            # rank 0's device and arithmetic, per (re)start: "cuda:0 (NVIDIA H200), bf16 autocast"
    tracked: TrackedRun | None = None   # the MLflow run (and registered version), with config.mlflow

    def table(self) -> str:
        return metrics_table(self.best)


def use_gpu(config: Config) -> bool:
    """The config's choice, else GPUs whenever the cluster has any."""
    if config.train.use_gpu is not None:
        return config.train.use_gpu
    return ray.cluster_resources().get("GPU", 0) > 0


def build_trainer(config: Config, progress=None, callbacks=()) -> TorchTrainer:
    """A TorchTrainer for ``config``. The data is counted and checked here, before any worker starts
    (``plan_training_data``); the workers then read and tokenize their shares on Ray Data, and rank 0
    posts its steps to ``progress`` (a ``mtl.runtime.progress.ProgressBoard``), when given. ``callbacks``
    are Ray Train's (``jobs.tune`` passes the one that hands each report to Ray Tune)."""
    config = resolve_init_from(_paths_for_workers(config))
    if config.distill:
        config = resolve_teacher(config)
    corpus = teacher_labeled_sources(config) if config.distill and config.distill.corpus else None
    specs, plans = plan_training_data(config, corpus)
    if config.model.init_from:
        specs = inherited_specs(specs, config.model.init_from)
    if config.distill:
        specs = teacher_specs(specs, config.distill.teacher)
    settings = config.train
    gpu = use_gpu(config)
    checkpoints = checkpoint_storage(config, nodes=sum(node["Alive"] for node in ray.nodes()))
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config.model_dump(), "specs": [spec.to_dict() for spec in specs],
                           "data": {task: asdict(plan) for task, plan in plans.items()}, "progress": progress},
        scaling_config=ScalingConfig(num_workers=settings.num_workers, use_gpu=gpu,
                                     resources_per_worker={"CPU": settings.cpus_per_worker,
                                                           **({"GPU": 1} if gpu else {})},
                                     placement_strategy=settings.placement_strategy),
        run_config=RunConfig(
            name=RUN_NAME,
            storage_path=checkpoints,
            checkpoint_config=CheckpointConfig(num_to_keep=settings.checkpoints_to_keep,
                                               checkpoint_score_attribute="combined", checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=settings.max_failures),
            callbacks=list(callbacks),
        ),
    )


def _paths_for_workers(config: Config) -> Config:
    """Data paths as the workers and Ray Data's tasks must see them.

    In a job submitted with ``--working-dir`` every node has its own copy of that folder, and a
    relative path resolves in it on every node: keep it relative, and keep Ray Train from moving
    its workers into their run folder. Otherwise make it absolute: nothing else runs in the
    driver's folder.
    """
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"  # read where the trainer is built: here, on the driver
    if ray.get_runtime_context().runtime_env.get("working_dir"):
        return config
    return with_absolute_paths(config)


def with_absolute_paths(config: Config) -> Config:
    """``config`` with every data path absolute (URIs as they are)."""
    def absolute(source: DataSource | None) -> DataSource | None:
        return source and source.model_copy(update={"path": storage.absolute(source.path)})

    tasks = [task.model_copy(update={"train": absolute(task.train), "eval": absolute(task.eval)})
             for task in config.tasks]
    distill = config.distill and config.distill.model_copy(
        update={"corpus": config.distill.corpus and storage.absolute(config.distill.corpus)})
    return config.model_copy(update={"tasks": tasks, "embedding_eval": absolute(config.embedding_eval),
                                     "distill": distill})


def checkpoint_storage(config: Config, *, nodes: int) -> str:
    """Where Ray Train keeps the run's checkpoints: ``train.storage_path``, else ``<output>/ray``.

    A local path on a cluster of several nodes is refused unless ``train.storage_shared`` says
    every node mounts it: a worker restarted on another node would find no checkpoint to resume.
    """
    location = storage.absolute(config.train.storage_path or storage.join(config.output, "ray"))
    if nodes > 1 and storage.is_local(location) and not config.train.storage_shared:
        raise ConfigError(f"config error: train.storage_path: '{location}' is a local path, and this cluster "
                          f"has {nodes} nodes, each with its own disk; use shared storage (s3://, gs://, ...) "
                          "for output or train.storage_path, or set train.storage_shared=true if every "
                          "node mounts this path")
    return location


def fit(config: Config, *, progress: bool = False, callbacks=()) -> TrainingSummary:
    """Train, then export the best model folder, metrics.json and plots under ``config.output``;
    with ``progress``, draw the steps as a bar on stderr."""
    with progress_bar("training", "step", enabled=progress) as bar:
        result = build_trainer(config, bar and bar.board, callbacks).fit()
    if result.error:
        raise result.error
    best_checkpoint = result.get_best_checkpoint(metric="combined", mode="max")
    if best_checkpoint is None:
        raise RuntimeError("training reported no checkpoint")
    summary = export_run(config, best_checkpoint, result.checkpoint)
    if config.mlflow is not None:
        summary.tracked = log_training(config, summary)
    return summary


def export_run(config: Config, best_checkpoint, latest_checkpoint) -> TrainingSummary:
    """Copy the best model folder to ``<output>/best`` with its reference statistics, and write the
    reports beside it.

    Everything is written to a local folder first and then published to ``output`` (local or a
    URI); the model folder's ``mtl.json`` goes last, so a reader never loads half a model.
    """
    output = storage.absolute(config.output)
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch)
        with latest_checkpoint.as_directory() as folder:
            state = asdict(read_progress(Path(folder)))
        with best_checkpoint.as_directory() as folder:
            shutil.copytree(Path(folder) / MODEL_DIR, local / "best")
        best = json.loads((local / "best" / SPEC_FILE).read_text())["metadata"]["metrics"]
        if config.train.reference_texts:
            store_reference(local / "best", reference_texts(config, config.train.reference_texts))
        history = state["history"]
        # a worker's own rate; with W workers the job trains about W times as many sentences per second
        rate = state["train_sentences"] / state["train_seconds"] if state["train_seconds"] else 0.0
        steps = max(state["step"], 1)
        step_times = {"seconds_per_step": state["train_seconds"] / steps,
                      "allreduce_seconds_per_step": state["allreduce_seconds"] / steps}
        reports = [write_metrics(local, {"best": best, "history": history, "steps": state["step"],
                                         "resumes": state["resumes"], "stopped_early": state["stopped_early"],
                                         "sentences_per_second_per_worker": rate, **step_times,
                                         "peak_worker_rss_bytes": state["peak_worker_rss"],
                                         "peak_worker_private_rss_bytes": state["peak_worker_private_rss"],
                                         "placements": state["placements"], "devices": state["devices"]})]
        reports += plot_learning_curves(local, history) + plot_confusion_matrices(local, best)
        storage.replace_folder(local / "best", storage.join(output, "best"), last=SPEC_FILE)
        for report in reports:
            storage.write_bytes(storage.join(output, report.name), report.read_bytes())
    published = [storage.join(output, report.name) for report in reports]
    return TrainingSummary(best_model=storage.join(output, "best"), metrics_file=published[0], plots=published[1:],
                           best=best, history=history, steps=state["step"], resumes=state["resumes"],
                           worker_sentences_per_second=rate, placements=state["placements"], devices=state["devices"],
                           **step_times)
