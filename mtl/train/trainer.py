"""The Ray edge of training: a TorchTrainer over Ray Data shards, then the best model exported.

``fit`` prepares and checks the data on the driver, hands tokenized examples to Ray Data (one
dataset per task, split evenly across workers), runs ``train_loop_per_worker`` on every worker, and
copies the best checkpoint's model folder to ``<output>/best`` with a metrics file and plots.
A run writes its checkpoints under ``<output>/ray`` (or ``train.storage_path``) with a fixed name,
so running it again with the same output resumes it instead of starting over.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import ray
import ray.data
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from mtl.config import Config
from mtl.train.loop import MODEL_DIR, STATE_FILE, TrainState, train_loop_per_worker
from mtl.train.prepare import prepare_data
from mtl.train.report import (
    metrics_table,
    plot_confusion_matrices,
    plot_learning_curves,
    write_metrics,
)

RUN_NAME = "mtl-train"


@dataclass
class TrainingSummary:
    best_model: Path
    metrics_file: Path
    plots: list[Path]
    best: dict
    history: list[dict]
    steps: int
    resumes: int
    sentences_per_second: float
    placements: list[list[str]]   # the Ray node id of each rank, per (re)start of the workers

    def table(self) -> str:
        return metrics_table(self.best)


def use_gpu(config: Config) -> bool:
    """The config's choice, else GPUs whenever the cluster has any."""
    if config.train.use_gpu is not None:
        return config.train.use_gpu
    return ray.cluster_resources().get("GPU", 0) > 0


def build_trainer(config: Config) -> TorchTrainer:
    """A TorchTrainer for ``config``; reading and checking the data happens here, before any worker."""
    prepared = prepare_data(config)
    settings = config.train
    gpu = use_gpu(config)
    datasets = {f"train_{task}": ray.data.from_items(features)
                for task, features in prepared.train_features.items()}
    storage = settings.storage_path or str((Path(config.output) / "ray").resolve())
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config.model_dump(), "specs": [spec.to_dict() for spec in prepared.specs],
                           "eval_rows": prepared.eval_rows},
        scaling_config=ScalingConfig(num_workers=settings.num_workers, use_gpu=gpu,
                                     resources_per_worker={"CPU": settings.cpus_per_worker, **({"GPU": 1} if gpu else {})},
                                     placement_strategy=settings.placement_strategy),
        run_config=RunConfig(
            name=RUN_NAME,
            storage_path=storage,
            checkpoint_config=CheckpointConfig(num_to_keep=settings.checkpoints_to_keep,
                                               checkpoint_score_attribute="combined", checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=settings.max_failures),
        ),
        datasets=datasets,
    )


def fit(config: Config) -> TrainingSummary:
    """Train, then export the best model folder, metrics.json and plots under ``config.output``."""
    result = build_trainer(config).fit()
    if result.error:
        raise result.error
    best_checkpoint = result.get_best_checkpoint(metric="combined", mode="max")
    if best_checkpoint is None:
        raise RuntimeError("training reported no checkpoint")
    return export_run(Path(config.output), best_checkpoint, result.checkpoint)


def export_run(output: Path, best_checkpoint, latest_checkpoint) -> TrainingSummary:
    """Copy the best model folder to ``<output>/best`` (whole or not at all) and write the reports."""
    output.mkdir(parents=True, exist_ok=True)
    with latest_checkpoint.as_directory() as folder:
        # through TrainState, so a checkpoint written before a field existed gets its default
        state = asdict(TrainState(**json.loads((Path(folder) / STATE_FILE).read_text())["state"]))
    history = state["history"]
    target, staging = output / "best", output / "best.partial"
    shutil.rmtree(staging, ignore_errors=True)
    with best_checkpoint.as_directory() as folder:
        shutil.copytree(Path(folder) / MODEL_DIR, staging)
        best = json.loads((staging / "mtl.json").read_text())["metadata"]["metrics"]
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    # a worker's own rate; with W workers the job trains about W times as many sentences per second
    rate = state["train_sentences"] / state["train_seconds"] if state["train_seconds"] else 0.0
    metrics_file = write_metrics(output, {"best": best, "history": history, "steps": state["step"],
                                          "resumes": state["resumes"], "stopped_early": state["stopped_early"],
                                          "sentences_per_second_per_worker": rate,
                                          "placements": state["placements"]})
    plots = plot_learning_curves(output, history) + plot_confusion_matrices(output, best)
    return TrainingSummary(best_model=target, metrics_file=metrics_file, plots=plots, best=best, history=history,
                           steps=state["step"], resumes=state["resumes"], sentences_per_second=rate,
                           placements=state["placements"])
