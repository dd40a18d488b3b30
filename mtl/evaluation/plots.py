"""The PNG plots of training runs and evaluation reports: learning curves, confusion matrices, F1
per class with intervals, robustness."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from mtl.metrics import evaluation_reports

matplotlib.use("Agg")  # files only; no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402


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


def plot_class_scores(output: Path, reports: dict[str, dict]) -> list[Path]:
    """Per task with classes or entity types: F1 per label with its interval as an error bar."""
    paths = []
    for task, report in reports.items():
        groups = report.get("per_class") or report.get("per_type")
        if not groups or "f1_ci" not in next(iter(groups.values())):
            continue
        labels = list(groups)
        values = [groups[label]["f1"] for label in labels]
        errors = [[value - groups[label]["f1_ci"][0] for label, value in zip(labels, values)],
                  [groups[label]["f1_ci"][1] - value for label, value in zip(labels, values)]]
        figure, axis = plt.subplots(figsize=(max(5, 0.3 * len(labels) + 3), 4))
        axis.bar(range(len(labels)), values, yerr=errors, capsize=3, color="tab:blue")
        axis.set_xticks(range(len(labels)), labels, rotation=90 if len(labels) > 8 else 0)
        axis.set_ylim(0, 1)
        axis.set_ylabel("F1 (95% interval)")
        axis.set_title(f"{task}: F1 per {'class' if 'per_class' in report else 'entity type'}")
        figure.tight_layout()
        paths.append(save_figure(figure, output / f"f1_{task}.png"))
    return paths


def plot_robustness(output: Path, reports: dict[str, dict]) -> list[Path]:
    """One plot: each task's primary metric on clean and on each perturbed copy of its data."""
    if not reports or not any(report["robustness"] for report in reports.values()):
        return []
    variants = ["clean", *next(iter(reports.values()))["robustness"]]
    figure, axis = plt.subplots(figsize=(max(6, 1.6 * len(reports) + 2), 4))
    width = 0.8 / len(variants)
    for offset, variant in enumerate(variants):
        values = [report["primary"] if variant == "clean" else report["robustness"][variant]["primary"]
                  for report in reports.values()]
        axis.bar([position + offset * width for position in range(len(reports))], values, width, label=variant)
    axis.set_xticks([position + 0.4 - width / 2 for position in range(len(reports))], list(reports))
    axis.set_ylim(0, 1)
    axis.set_ylabel("primary metric")
    axis.set_title("robustness to perturbed input")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return [save_figure(figure, output / "robustness.png")]
