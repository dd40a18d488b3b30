"""The model card: ``README.md`` in every model folder, in Hugging Face's format.

YAML front matter (language, license, library, tags, datasets, base model, ``model-index`` with the
metrics), written by ``huggingface_hub``'s ``ModelCardData``; then intended use, tasks and labels,
training data and settings, evaluation results, limitations, bias and ethical considerations, and
how to load the folder. It is generated from the folder's own files: ``mtl.json`` and, once
``python -m jobs.evaluate --update-card`` has scored the model, ``evaluation.json`` (the
evaluation's report, whose intervals the card then shows).
"""

from __future__ import annotations

import json

from huggingface_hub import EvalResult, ModelCardData

from mtl import storage
from mtl.metrics import HEADLINE_METRICS, evaluation_reports

CARD_FILE = "README.md"
EVALUATION_FILE = "evaluation.json"
_TASK_TYPES = {"classification": "text-classification", "tagging": "token-classification",
               "similarity": "sentence-similarity"}
_PACKAGED_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


def write_model_card(folder: str, version: str) -> str:
    """Write ``README.md`` into the model folder (local or a URI) from its ``mtl.json`` and, when
    there, ``evaluation.json``; returns the card's path. The card is named after the run (the
    config's ``output``), since a model folder is written under a temporary name first."""
    description = json.loads(storage.read_text(storage.join(folder, "mtl.json")))
    evaluation_path = storage.join(folder, EVALUATION_FILE)
    evaluation = json.loads(storage.read_text(evaluation_path)) if storage.is_file(evaluation_path) else None
    path = storage.join(folder, CARD_FILE)
    output = (description.get("metadata", {}).get("config") or {}).get("output")
    name = storage.name(output) if output else storage.name(folder)
    storage.write_text(path, model_card(description, evaluation, name=name, version=version))
    return path


def model_card(description: dict, evaluation: dict | None, *, name: str, version: str) -> str:
    """The card's text for a model described by ``description`` (the parsed ``mtl.json``)."""
    settings, metadata = description["model"], description.get("metadata", {})
    config = metadata.get("config") or {}
    scored = evaluation or metadata.get("metrics") or {}
    reports = evaluation_reports(scored)
    front = ModelCardData(
        language=["en"], license="other", library_name="sentence-transformers",
        base_model=_base_model(settings["encoder"]), datasets=_training_files(config) or None,
        tags=["mtl-ray", "multi-task", "sentence-transformers", "feature-extraction", "sentence-similarity",
              *sorted({_TASK_TYPES[task["kind"]] for task in description["tasks"]})],
        model_name=name, eval_results=_eval_results(reports, evaluation is not None) or None)
    sections = [
        f"---\n{front.to_yaml()}\n---\n",
        f"# {name}\n\n{_summary(description, version)}",
        _INTENDED_USE,
        _tasks_section(description["tasks"]),
        _training_section(config, metadata, description),
        _results_section(reports, evaluated=evaluation is not None),
        _LIMITATIONS,
        _USAGE,
    ]
    return "\n\n".join(section.strip() for section in sections) + "\n"


def _base_model(encoder: str) -> str:
    return _PACKAGED_ENCODER if encoder in ("all-MiniLM-L6-v2", _PACKAGED_ENCODER) else encoder


def _training_files(config: dict) -> list[str]:
    return list(dict.fromkeys(task["train"]["path"] for task in config.get("tasks", [])))


def _eval_results(reports: dict, evaluated: bool) -> list[EvalResult]:
    results = []
    for task, report in reports.items():
        kind = _kind(report)
        source = report.get("source", "validation data of the training run")
        for metric in HEADLINE_METRICS[kind]:
            if metric in report:
                results.append(EvalResult(task_type=_TASK_TYPES[kind], task_name=task, dataset_type=source,
                                          dataset_name=source, dataset_split="validation", metric_type=metric,
                                          metric_value=round(float(report[metric]), 4),
                                          metric_name=f"{task} {metric}" + ("" if evaluated else " (during training)")))
    return results


def _kind(report: dict) -> str:
    """A report's task kind (training's reports do not name it; their metrics tell)."""
    if "kind" in report:
        return report["kind"]
    return "similarity" if "spearman" in report else "classification" if "accuracy" in report else "tagging"


def _summary(description: dict, version: str) -> str:
    settings = description["model"]
    tasks = ", ".join(f"`{task['name']}` ({task['kind']})" for task in description["tasks"])
    return (f"A multi-task sentence transformer trained with mtl-ray: one shared encoder "
            f"(`{_base_model(settings['encoder'])}`, {settings['pooling']} pooling"
            f"{', normalized' if settings['normalize'] else ''}, up to {settings['max_length']} tokens) gives a "
            f"sentence embedding, and task heads on top answer {tasks} in the same forward pass.\n\n"
            f"Model version `{version}` (a hash of its task description and head weights), written by mtl-ray "
            f"{description.get('library_version', '?')}.")


_INTENDED_USE = """## Intended use

- Bulk labeling of English text (`python -m jobs.label`): the embedding, each sentence label with
  its probability, and entity spans, one row per input row.
- An online endpoint (`serve run serve_config.yaml`) for the same answers one request at a time.
- The embedding for semantic search, deduplication and clustering of short English texts.

It is not meant for decisions about people without a human in the loop, nor for text unlike its
training data (other languages, other domains) without evaluating it there first
(`python -m jobs.evaluate`)."""


def _tasks_section(tasks: list[dict]) -> str:
    lines = ["## Tasks and labels", "", "| task | kind | labels |", "|---|---|---|"]
    for task in tasks:
        labels = ", ".join(f"`{label}`" for label in task["labels"]) or "(none: it trains the embedding)"
        lines.append(f"| `{task['name']}` | {task['kind']} | {labels} |")
    return "\n".join(lines)


def _training_section(config: dict, metadata: dict, description: dict) -> str:
    lines = ["## Training data and settings", ""]
    if not config:
        return "\n".join([*lines, "This folder records no training config."])
    lines += ["| task | kind | training data | eval data |", "|---|---|---|---|"]
    for task in config["tasks"]:
        lines.append(f"| `{task['name']}` | {task['kind']} | `{task['train']['path']}` | "
                     f"{'`' + task['eval']['path'] + '`' if task.get('eval') else '-'} |")
    train = config.get("train", {})
    chosen = ("epochs", "batch_size", "num_workers", "learning_rate", "head_learning_rate", "schedule", "mixing",
              "loss_weighting", "max_examples_per_task", "preserve_embedding", "seed")
    lines += ["", "| setting | value |", "|---|---|"]
    lines += [f"| `train.{key}` | `{train[key]}` |" for key in chosen if key in train]
    lines += _lineage(config)
    lines += ["", f"Trained at {metadata.get('trained_at', '?')}, stopped at epoch {metadata.get('epoch', '?')}, "
              f"step {metadata.get('step', '?')}. The whole config is in `mtl.json` under `metadata.config`."]
    return "\n".join(lines)


def _lineage(config: dict) -> list[str]:
    """Where a distilled or pruned model came from."""
    model, distill = config.get("model", {}), config.get("distill")
    lines = []
    if model.get("keep_layers") is not None:
        source = model.get("init_from") or model["encoder"]
        lines.append(f"The encoder kept layers `{model['keep_layers']}` of `{source}`.")
    if distill:
        # older models' configs have no layer_weight
        layers = f", layer weight {distill['layer_weight']}" if distill.get("layer_weight") else ""
        lines.append(f"Distilled from `{distill['teacher']}` (`jobs.distill`: temperature {distill['temperature']}, "
                     f"soft-target weight {distill['soft_weight']}, label weight {distill['label_weight']}, "
                     f"embedding weight {distill['embedding_weight']}{layers}).")
    return ["", *lines] if lines else []


def _interval(report: dict, metric: str) -> str:
    interval = report.get(f"{metric}_ci")
    return f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "-"


def _results_section(reports: dict, evaluated: bool) -> str:
    if not reports:
        return "## Evaluation results\n\nNot evaluated yet: `python -m jobs.evaluate --model FOLDER --config " \
               "CONFIG --update-card`."
    origin = ("From `python -m jobs.evaluate` with 95% bootstrap confidence intervals." if evaluated else
              "From the validation during training (no intervals: run `python -m jobs.evaluate --model FOLDER "
              "--config CONFIG --update-card` for them).")
    lines = ["## Evaluation results", "", origin, "", "| task | metric | value | 95% interval | data |",
             "|---|---|---|---|---|"]
    for task, report in reports.items():
        kind = _kind(report)
        for metric in HEADLINE_METRICS[kind]:
            if metric in report:
                lines.append(f"| `{task}` | {metric} | {report[metric]:.4f} | {_interval(report, metric)} | "
                             f"`{report.get('source', '-')}` |")
    robust = {task: report["robustness"] for task, report in reports.items() if report.get("robustness")}
    if robust:
        perturbations = list(next(iter(robust.values())))
        lines += ["", "Robustness: the primary metric on perturbed eval data (the drop in parentheses).", "",
                  "| task | " + " | ".join(perturbations) + " |", "|---" * (len(perturbations) + 1) + "|"]
        lines += [f"| `{task}` | " + " | ".join(f"{values[p]['primary']:.4f} ({values[p]['drop']:+.4f})"
                                               for p in perturbations) + " |" for task, values in robust.items()]
    return "\n".join(lines)


_LIMITATIONS = """## Limitations

- The heads know only the labels of their training data; any text gets one of them, however far it is
  from what the model saw. Texts longer than the token limit are cut (answers say `truncated`).
- Metrics hold for data like the eval sets above; measure on your own data before relying on them.
- Fine-tuning for the tasks moves the embedding away from the base encoder's; `embedding` in the
  results (STS-B style Spearman) shows by how much when an `embedding_eval` was configured.

## Bias and ethical considerations

The base encoder was pretrained on large web corpora and carries their biases; the training data of
the heads adds its own (news text for entities, movie reviews for sentiment, in the shipped configs).
Entity and sentiment errors are not spread evenly: names and dialects rare in the training data are
recognised less often. Do not use the labels to make decisions about individuals; review the error
analysis of `python -m jobs.evaluate` on data from the population the model will serve."""


_USAGE = """## How to use

With this project (every task at once; the same code path as bulk labeling and the endpoint):

```python
from mtl.inference.predictor import Predictor

predictor = Predictor.from_folder("path/to/model-folder")
prediction = predictor.predict(["Anna flew to Paris with Air France."])[0]
prediction.labels, prediction.entities, prediction.embedding
```

With `transformers` (the encoder alone; mean-pool the token vectors for the embedding):

```python
from transformers import AutoModel, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("path/to/model-folder")
encoder = AutoModel.from_pretrained("path/to/model-folder")
```

With sentence-transformers (the embedding, pooling included):

```python
from sentence_transformers import SentenceTransformer

embeddings = SentenceTransformer("path/to/model-folder").encode(["Anna flew to Paris with Air France."])
```"""
