"""Continuous training, once around the loop on the demo data: train, register, promote; new data
arrives; train again from the production version, evaluate, and promote only if not worse.

    python scripts/continuous_training.py                       # MiniLM; a few minutes on 2 CPUs
    python scripts/continuous_training.py --encoder path/to/tiny-bert --work /tmp/ct

The demo training data is split in two: the first half is "what we had", the second "what came
in since". Everything (runs, data halves, the MLflow store unless $MLFLOW_TRACKING_URI is set)
goes under --work. Prints each step and the final decision.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mtl.config import load_config  # noqa: E402
from mtl.lifecycle import registry  # noqa: E402
from mtl.lifecycle.promotion import comparison_table, promote_if_better  # noqa: E402

MODEL_NAME = "demo-continuous"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="all-MiniLM-L6-v2")
    parser.add_argument("--work", default="runs/continuous", help="folder for runs, data halves and the store")
    parser.add_argument("--examples", type=int, default=200, help="training sentences per task and round")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--resamples", type=int, default=1000)
    return parser.parse_args(argv)


def split_training_data(work: Path) -> tuple[Path, Path]:
    lines = (REPO / "data" / "demo" / "train.jsonl").read_text().splitlines()
    halves = (work / "data" / "before.jsonl", work / "data" / "since.jsonl")
    halves[0].parent.mkdir(parents=True, exist_ok=True)
    halves[0].write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    halves[1].write_text("\n".join(lines[len(lines) // 2:]) + "\n")
    return halves


def round_config(args: argparse.Namespace, data: Path, output: str, init_from: str | None):
    """demo.yaml, trained on ``data`` into ``output`` and registered, optionally from ``init_from``."""
    overrides = [f"output={output}", f"model.encoder={args.encoder}", f"train.epochs={args.epochs}",
                 f"train.max_examples_per_task={args.examples}", "train.patience=null",
                 f"mlflow={json.dumps({'experiment': MODEL_NAME, 'register_as': MODEL_NAME})}",
                 *[f"tasks.{index}.train.path={data}" for index in (0, 1)],
                 *[f"tasks.{index}.eval.path={REPO / 'data' / 'demo' / 'eval.jsonl'}" for index in (0, 1)]]
    if init_from:
        overrides.append(f"model.init_from={init_from}")
    return load_config(REPO / "jobs" / "configs" / "demo.yaml", overrides)


def one_round(args: argparse.Namespace, data: Path, output: Path, init_from: str | None, reason: str):
    """Train on ``data`` (from ``init_from``), register the model, and promote it if it is not
    worse than production on the demo eval data; returns its version and the decision."""
    from mtl.train.trainer import fit

    config = round_config(args, data, str(output), init_from)
    version = fit(config).tracked.registered_version
    start = f" from {init_from}" if init_from else ""
    print(f"{output.name}: trained on {data.name}{start}, registered {MODEL_NAME} version {version}")
    decision = promote_if_better(MODEL_NAME, version, config, resamples=args.resamples, reason=reason)
    print(comparison_table(decision))
    return version, decision


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import os

    import ray

    work = Path(args.work).resolve()
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    before, since = split_training_data(work)
    ray.init(ignore_reinit_error=True)
    first, _ = one_round(args, before, work / "round-1", None, "the first model")
    production = f"{registry.REGISTRY_SCHEME}{MODEL_NAME}@{registry.PRODUCTION}"
    second, decision = one_round(args, since, work / "round-2", production, "continuous training on new data")
    print(f"{production} is now version {registry.current_version(MODEL_NAME)}")
    return {"first": first, "second": second, "promoted": decision.promoted,
            "production": registry.current_version(MODEL_NAME)}


if __name__ == "__main__":
    main()
