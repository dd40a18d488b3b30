"""Small training configs over the demo data, and sentence pairs made of its sentences, for tests."""

import json

from conftest import DEMO


def demo_config(encoder: str, output: str, **train) -> dict:
    """The demo tasks on ``encoder``, as a raw config dict (validate with mtl.config.validate_config)."""
    return {
        "output": output,
        "model": {"encoder": encoder, "max_length": 32},
        "tasks": [
            {"name": "sentiment", "kind": "classification",
             "train": {"path": str(DEMO / "train.jsonl"), "label_column": "sentiment"},
             "eval": {"path": str(DEMO / "eval.jsonl"), "label_column": "sentiment"}},
            {"name": "ner", "kind": "tagging",
             "train": {"path": str(DEMO / "train.jsonl")},
             "eval": {"path": str(DEMO / "eval.jsonl")}},
        ],
        "train": {"epochs": 2, "batch_size": 16, "learning_rate": 1e-3, "head_learning_rate": 1e-2,
                  "max_examples_per_task": 64, "log_every_steps": 1000, **train},
    }


def demo_texts() -> list[str]:
    return [json.loads(line)["text"] for line in (DEMO / "eval.jsonl").read_text().splitlines()]


def write_pairs(path, count: int = 24):
    """Scored pairs of demo sentences: a sentence with itself scores 5, with another 0-4."""
    texts = demo_texts()
    rows = []
    for index in range(count):
        first = texts[index % len(texts)]
        second = first if index % 3 == 0 else texts[(index * 7 + 1) % len(texts)]
        rows.append({"text": first, "pair": second, "score": 5.0 if second == first else float(index % 5)})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
