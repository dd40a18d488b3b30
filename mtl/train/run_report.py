"""What a finished run leaves beside its best model: a metrics JSON, PNG plots and a printed table."""

from __future__ import annotations

import json
from pathlib import Path

from mtl.metrics import evaluation_reports


def write_metrics(output: Path, run: dict) -> Path:
    """``metrics.json``: the best evaluation, every evaluation of the run, steps taken and restarts."""
    path = output / "metrics.json"
    path.write_text(json.dumps(run, indent=2))
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
