"""The GPU paths, end to end, on a machine with a GPU: train on it, lose the worker after the first
checkpoint and resume, then label a corpus on it. Stops with an error at the first thing that is wrong.

    python scripts/gpu_check.py --data ../shared/data --output runs/gpu_check

It trains the shipped CoNLL-2003 + SST-2 config (jobs/configs/conll_sst2.yaml) on a slice of each
task twice, once straight through and once with the worker killed, and labels SST-2's training
sentences with the model; the report (also printed) holds what a note needs: the devices, the
resumed run against the straight one, and the labeling rates.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import ray
import torch

from mtl.config import load_config
from mtl.inference.predictor import Predictor
from mtl.labeling.actors import cluster_plan
from mtl.labeling.options import LabelOptions
from mtl.labeling.pipeline import run_labeling
from mtl.metrics import row_cosines
from mtl.train.trainer import RUN_NAME, fit

CONFIG = "jobs/configs/conll_sst2.yaml"


def training_config(data: str, output: str, examples: int, eval_every: int, overrides: list[str]):
    return load_config(CONFIG, [
        f"output={output}", f"train.max_examples_per_task={examples}", "train.epochs=1",
        f"train.eval_every_steps={eval_every}", "train.patience=null", "train.max_failures=2", "mlflow=null",
        f"tasks.0.train.path={data}/conll2003/train.txt", f"tasks.0.eval.path={data}/conll2003/valid.txt",
        f"tasks.1.train.path={data}/sst2/train.tsv", f"tasks.1.eval.path={data}/sst2/dev.tsv",
        f"embedding_eval.path={data}/stsb/sts-dev.csv", *overrides])


def kill_the_worker_after_first_checkpoint(run_folder: Path, deadline: float) -> int:
    """SIGKILL the Ray Train worker process, as a lost node would, once a checkpoint is registered."""
    snapshot = run_folder / "checkpoint_manager_snapshot.json"
    while time.time() < deadline:
        if snapshot.exists():
            for pid in _train_worker_pids():
                os.kill(pid, signal.SIGKILL)
                return pid
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint in {run_folder} in time")


def _train_worker_pids():
    """Ray titles an actor's process after its class."""
    for process in Path("/proc").iterdir():
        try:
            if process.name.isdigit() and (process / "cmdline").read_bytes().startswith(b"ray::RayTrainWorker"):
                yield int(process.name)
        except OSError:  # ended while we looked
            continue


def check_training(args: argparse.Namespace, data: str, output: Path, device: str) -> tuple[dict, str]:
    def config(name: str):
        return training_config(data, str(output / name), args.examples, args.eval_every, args.overrides)

    started = time.perf_counter()
    straight = fit(config("straight"))
    straight_seconds = time.perf_counter() - started
    assert straight.devices[0].startswith(device), f"training ran on {straight.devices}"
    outcome = {}
    training = threading.Thread(target=lambda: outcome.update(summary=fit(config("killed"))))
    training.start()
    killed_pid = kill_the_worker_after_first_checkpoint(output / "killed" / "ray" / RUN_NAME, time.time() + 600)
    training.join(timeout=900)
    resumed = outcome["summary"]
    assert resumed.resumes == 1 and resumed.steps == straight.steps, (resumed.resumes, resumed.steps, straight.steps)
    assert [entry["step"] for entry in resumed.history] == [entry["step"] for entry in straight.history]
    assert all(used.startswith(device) for used in resumed.devices), resumed.devices
    # GPU kernels need not be bit-reproducible (atomic adds in an embedding's backward): report how far
    # apart the runs end (on an H200 they ended the same to the last digit)
    combined_gap = max(abs(a["combined"] - b["combined"]) for a, b in zip(resumed.history, straight.history))
    assert combined_gap < 0.02, f"the resumed run's scores drifted {combined_gap:.4f} from the straight run's"
    report = {"devices": resumed.devices, "steps": straight.steps, "straight_seconds": round(straight_seconds, 1),
              "worker_sentences_per_second": round(straight.worker_sentences_per_second, 1),
              "seconds_per_step": round(straight.seconds_per_step, 4), "killed_worker_pid": killed_pid,
              "resumes": resumed.resumes, "largest_combined_gap_resumed_vs_straight": round(combined_gap, 5),
              "best_straight": straight.best["tasks"], "best_resumed": resumed.best["tasks"],
              "embedding_straight": straight.best.get("embedding"), "embedding_resumed": resumed.best.get("embedding")}
    return report, straight.best_model


def check_labeling(corpus: str, output: Path, model: str, gpus: int) -> dict:
    report, files = {}, {}
    for precision in ("float32", "bfloat16"):
        options = LabelOptions(model=model, input=corpus, output=str(output / f"labels_{precision}"),
                               text_column="sentence", input_format="tsv", precision=precision)
        plan = cluster_plan(options)
        assert plan.gpus == gpus, f"the labelers reserve {plan.gpus} GPUs, not {gpus}: {plan}"
        summary = run_labeling(options)
        files[precision] = summary.files
        report[precision] = {"rows": summary.rows, "seconds": round(summary.seconds, 1),
                             "rows_per_second": round(summary.rows / summary.seconds, 1), "actors": plan.max_actors}
    labeled = pq.read_table(files["float32"][0]).slice(0, 512).to_pylist()
    on_cpu = Predictor.from_folder(model, device="cpu").predict([row["sentence"] for row in labeled])
    same_label = np.mean([row["sentiment"] == p.labels["sentiment"].label for row, p in zip(labeled, on_cpu)])
    cosines = row_cosines(np.array([row["embedding"] for row in labeled]), np.stack([p.embedding for p in on_cpu]))
    assert same_label >= 0.99 and cosines.min() > 0.999, (same_label, cosines.min())
    report["gpu_vs_cpu"] = {"rows": len(labeled), "same_sentiment": float(same_label),
                            "least_embedding_cosine": round(float(cosines.min()), 6)}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--output", default="runs/gpu_check")
    parser.add_argument("--examples", type=int, default=2000, help="training sentences per task")
    parser.add_argument("--eval-every", type=int, default=25, help="steps between evaluations (checkpoints)")
    parser.add_argument("--corpus", help="TSV with a 'sentence' column to label (default: SST-2's training set)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the training config, as jobs.train --set does")
    parser.add_argument("--cpu", action="store_true", help="expect the CPU: try this script on a machine without a GPU")
    args = parser.parse_args()
    if not args.cpu and not torch.cuda.is_available():
        raise SystemExit("no GPU: torch.cuda.is_available() is False")
    data, output = str(Path(args.data).resolve()), Path(args.output).resolve()
    ray.init(include_dashboard=False, log_to_driver=False, **({"num_gpus": 0} if args.cpu else {}))
    report = {"device": "cpu" if args.cpu else torch.cuda.get_device_name(0), "torch": torch.__version__,
              "ray": ray.__version__}
    report["training"], model = check_training(args, data, output, "cpu" if args.cpu else "cuda")
    report["labeling"] = check_labeling(args.corpus or f"{data}/sst2/train.tsv", output, model, 0 if args.cpu else 1)
    output.mkdir(parents=True, exist_ok=True)
    (output / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
