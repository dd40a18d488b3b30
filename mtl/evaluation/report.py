"""What ``jobs.evaluate`` leaves in its output folder: ``report.json``, ``report.md`` and PNG plots
(confusion matrices, per-class or per-type F1 with intervals, robustness), and the printed table."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from mtl import storage
from mtl.evaluation.plots import plot_class_scores, plot_confusion_matrices, plot_robustness
from mtl.metrics import HEADLINE_METRICS, evaluation_reports


def write_report(report: dict, output: str) -> list[str]:
    """Write the report files under ``output`` (local or a URI); returns their paths."""
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch)
        (local / "report.json").write_text(json.dumps(report, indent=2))
        (local / "report.md").write_text(markdown_report(report))
        reports = evaluation_reports(report)
        files = [local / "report.json", local / "report.md", *plot_confusion_matrices(local, report),
                 *plot_class_scores(local, reports), *plot_robustness(local, reports)]
        published = []
        for file in files:
            published.append(storage.join(output, file.name))
            storage.write_bytes(published[-1], file.read_bytes())
    return published


def _value(report: dict, metric: str) -> str:
    interval = report.get(f"{metric}_ci")
    return f"{report[metric]:.4f}" + (f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "")


def summary_table(report: dict) -> str:
    """The printed table: each task's headline metrics with their 95% intervals, and the robustness drops."""
    reports = evaluation_reports(report)
    perturbations = report["options"]["perturbations"]
    lines = [f"{'task':<14} {'metric':<10} {'value [95% interval]':<28} "
             + " ".join(f"{'drop ' + name:>16}" for name in perturbations)]
    for task, task_report in reports.items():
        for number, metric in enumerate(HEADLINE_METRICS[task_report["kind"]]):
            drops = " ".join(f"{task_report['robustness'][name]['drop']:>+16.4f}" for name in perturbations) \
                if number == 0 else ""
            lines.append(f"{task if number == 0 else '':<14} {metric:<10} {_value(task_report, metric):<28} {drops}")
    lines.append(f"{'combined':<14} {'':<10} {report['combined']:.4f}")
    return "\n".join(line.rstrip() for line in lines)


def markdown_report(report: dict) -> str:
    """The report for people: metrics with intervals, per-class/per-type scores, errors, robustness."""
    options = report["options"]
    lines = ["# Evaluation report", "",
             f"95% percentile-bootstrap intervals from {options['resamples']} resamples (seed {options['seed']}).",
             "", "```", summary_table(report), "```"]
    for task, task_report in evaluation_reports(report).items():
        lines += ["", f"## {task} ({task_report['kind']}, {task_report['examples']} examples, "
                      f"`{task_report['source']}`)", ""]
        lines += _per_label_table(task_report)
        lines += _errors_section(task_report)
        if task_report["robustness"]:
            lines += ["", "Robustness (primary metric on perturbed input):", "", "| perturbation | value | drop |",
                      "|---|---|---|"]
            lines += [f"| {name} | {_value(values, 'primary')} | {values['drop']:+.4f} |"
                      for name, values in task_report["robustness"].items()]
    return "\n".join(lines) + "\n"


def _per_label_table(report: dict) -> list[str]:
    groups = report.get("per_class") or report.get("per_type")
    if not groups:
        return [f"Spearman {_value(report, 'spearman')}, Pearson {_value(report, 'pearson')} over "
                f"{report['pairs']} pairs."]
    lines = ["| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    lines += [f"| `{label}` | {_value(scores, 'precision')} | {_value(scores, 'recall')} | {_value(scores, 'f1')} | "
              f"{scores['support']} |" for label, scores in groups.items()]
    return lines


def _errors_section(report: dict) -> list[str]:
    errors = report["errors"]
    lines = [""]
    if "confident_mistakes" in errors:
        lines += ["Most confused pairs (gold -> predicted): "
                  + (", ".join(f"`{p['gold']}` -> `{p['predicted']}` ({p['count']})" for p in errors["confused_pairs"])
                     or "none")]
        lines += ["", "Most confident mistakes:", "", "| text | gold | predicted | confidence |", "|---|---|---|---|"]
        lines += [f"| {_cell(m['text'])} | `{m['gold']}` | `{m['predicted']}` | {m['confidence']:.3f} |"
                  for m in errors["confident_mistakes"]]
    elif "entity_errors" in errors:
        lines += ["Entity errors: " + ", ".join(f"{name} {count}" for name, count in errors["entity_errors"].items()),
                  "", "| error | sentence | gold | predicted |", "|---|---|---|---|"]
        shown = [(name, example) for name, examples in errors["entity_error_examples"].items()
                 for example in examples[:3]]
        lines += [f"| {name} | {_cell(example['sentence'])} | {example['gold'] or '-'} | "
                  f"{example['predicted'] or '-'} |" for name, example in shown]
    else:
        lines += ["Pairs ranked farthest from their gold score:", "", "| text | pair | gold | cosine |",
                  "|---|---|---|---|"]
        lines += [f"| {_cell(d['text'])} | {_cell(d['pair'])} | {d['score']:g} | {d['cosine']:.3f} |"
                  for d in errors["largest_disagreements"]]
    return lines


def _cell(text: str) -> str:
    """Text for a Markdown table cell: no pipes or line breaks, at most 120 characters."""
    text = " ".join(text.replace("|", "\\|").split())
    return text if len(text) <= 120 else text[:117] + "..."
