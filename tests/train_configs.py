"""Small training configs over the demo data, for tests."""

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
