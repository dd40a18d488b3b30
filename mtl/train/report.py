"""What a finished run leaves beside its best model: a metrics JSON, PNG plots and a printed table."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

from mtl.metrics import evaluation_reports

matplotlib.use("Agg")  # files only; no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402


def write_metrics(output: Path, run: dict) -> Path:
    """``metrics.json``: the best evaluation, every evaluation of the run, steps taken and restarts."""
    path = output / "metrics.json"
    path.write_text(json.dumps(run, indent=2))
    return path


def plot_learning_curves(output: Path, history: list[dict]) -> list[Path]:
    """One PNG per task: training loss and the task's primary eval metric, by optimizer step."""
    paths = []
    tasks = sorted({task for entry in history for task in entry["train_loss"]})
    for task in tasks:
        steps = [entry["step"] for entry in history if task in entry["train_loss"]]
        figure, loss_axis = plt.subplots(figsize=(6, 4))
        loss_axis.plot(steps, [entry["train_loss"][task] for entry in history if task in entry["train_loss"]],
                       marker="o", color="tab:blue", label="train loss")
        loss_axis.set_xlabel("optimizer step")
        loss_axis.set_ylabel("train loss", color="tab:blue")
        scored = [(entry["step"], evaluation_reports(entry)[task]["primary"]) for entry in history
                  if task in evaluation_reports(entry)]
        if scored:
            metric_axis = loss_axis.twinx()
            metric_axis.plot(*zip(*scored), marker="s", color="tab:orange")
            metric_axis.set_ylabel("eval score (accuracy, entity F1 or Spearman)", color="tab:orange")
        loss_axis.set_title(f"{task}: learning curve")
        figure.tight_layout()
        paths.append(save_figure(figure, output / f"learning_curve_{task}.png"))
    return paths


def plot_confusion_matrices(output: Path, best: dict) -> list[Path]:
    """One PNG per classification task, from the best evaluation (rows: gold, columns: predicted)."""
    paths = []
    for task, report in best.get("tasks", {}).items():
        if "confusion_matrix" not in report:
            continue
        labels, matrix = report["labels"], report["confusion_matrix"]
        size = max(4, 0.35 * len(labels) + 2)
        figure, axis = plt.subplots(figsize=(size, size))
        image = axis.imshow(matrix, cmap="Blues")
        axis.set_xticks(range(len(labels)), labels, rotation=90)
        axis.set_yticks(range(len(labels)), labels)
        axis.set_xlabel("predicted")
        axis.set_ylabel("gold")
        if len(labels) <= 12:
            for row, values in enumerate(matrix):
                for column, value in enumerate(values):
                    axis.text(column, row, value, ha="center", va="center", fontsize=8)
        figure.colorbar(image, ax=axis)
        axis.set_title(f"{task}: confusion matrix")
        figure.tight_layout()
        paths.append(save_figure(figure, output / f"confusion_{task}.png"))
    return paths


def save_figure(figure, path: Path) -> Path:
    """Write ``figure`` as a PNG and free it."""
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def metrics_table(best: dict) -> str:
    """A plain-text table of the best evaluation's per-task metrics."""
    lines = [f"{'task':<16} {'metric':<10} {'score':>8}  {'macro-F1 / P / R':>20}"]
    for task, report in evaluation_reports(best).items():
        if "accuracy" in report:
            lines.append(f"{task:<16} {'accuracy':<10} {report['accuracy']:>8.4f}  {report['macro_f1']:>20.4f}")
        elif "spearman" in report:
            pearson = f"Pearson {report['pearson']:.4f}"
            lines.append(f"{task:<16} {'Spearman':<10} {report['spearman']:>8.4f}  {pearson:>20}")
        else:
            detail = f"{report['precision']:.4f} / {report['recall']:.4f}"
            lines.append(f"{task:<16} {'entity F1':<10} {report['f1']:>8.4f}  {detail:>20}")
    lines.append(f"{'combined':<16} {'':<10} {best.get('combined', float('nan')):>8.4f}")
    return "\n".join(lines)
