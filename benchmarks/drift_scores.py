"""Drift scores of familiar and unfamiliar text against a news reference (docs/monitoring.md).

    python benchmarks/drift_scores.py [--window 1000]

The reference is 1,000 CoNLL-2003 validation sentences (Reuters news) as all-MiniLM-L6-v2 with
the demo heads answers them; each window is scored as an endpoint replica scores it. Lengths and
the embedding do not depend on the heads, so untrained heads do here. The baseline row is more
news from the same validation set: what a window scores when nothing has drifted.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import torch

from mtl.config import ModelConfig
from mtl.data.readers import read_rows
from mtl.inference.model_folder import build_model, save_model_folder
from mtl.inference.predictor import Predictor
from mtl.inference.reference import reference_statistics
from mtl.serving.drift import DriftWindow
from mtl.task_config import DataSource
from mtl.tasks import TaskSpec

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SPECS = [TaskSpec("sentiment", "classification", ("negative", "positive")),
         TaskSpec("ner", "tagging", ("O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER", "B-MISC", "I-MISC"))]


def conll_texts(relative: str) -> list[str]:
    source = DataSource(path=str(DATA / relative), format="conll")
    return [" ".join(row["tokens"]) for row in read_rows(source, "tagging")]


def sst2_texts() -> list[str]:
    return [line.split("\t")[0] for line in (DATA / "sst2" / "dev.tsv").read_text().splitlines()[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=1000)
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = random.Random(0)
    news = conll_texts("conll2003/valid.txt")
    rng.shuffle(news)
    reference_texts, held_back = news[:1000], news[1000:]
    with tempfile.TemporaryDirectory() as scratch:
        folder = save_model_folder(build_model(ModelConfig(), SPECS), Path(scratch) / "model")
        predictor = Predictor.from_folder(folder, device="cpu")
        reference = reference_statistics(reference_texts, predictor.predict(reference_texts))
        windows = {"other CoNLL-2003 validation sentences (baseline)": held_back,
                   "CoNLL-2003 training sentences": conll_texts("conll2003/train.txt"),
                   "WNUT-17 tweets": conll_texts("wnut17/emerging.dev.conll"),
                   "SST-2 movie reviews": sst2_texts()}
        print(f"| window of {args.window} | length PSI | embedding | past a threshold |\n|---|---|---|---|")
        baseline = None
        for name, texts in windows.items():
            sample = rng.sample(texts, min(args.window, len(texts)))
            window = DriftWindow(reference, size=len(sample), min_window=len(sample))
            for text, prediction in zip(sample, predictor.predict(sample)):
                window.add(text, prediction)
            report = window.report()
            baseline = baseline or report.scores["embedding"]
            drifted = ", ".join(report.drifted) or "none"
            print(f"| {name} | {report.scores['length']:.3f} | {report.scores['embedding']:.3f} "
                  f"({report.scores['embedding'] / baseline:.1f}x the baseline) | {drifted} |")


if __name__ == "__main__":
    main()
