"""Training memory against corpus size: one epoch on 10,000 and on 1,000,000 generated sentences.

    python benchmarks/train_memory.py [--sizes 10000 1000000]

Each size trains one epoch of two tasks (a sentence label and word tags, every sentence in both)
on a tiny random BERT (2 layers, 32 wide, the packaged MiniLM tokenizer), so that a million
sentences train in minutes on 2 CPUs; memory, not the model, is what is measured. Each size runs
in a process of its own, whose driver's peak resident memory (ru_maxrss) is its own; the worker's
peak is what the training job reports (``peak_worker_rss_bytes`` in metrics.json), and beside it
the worker's peak less shared memory (``peak_worker_private_rss_bytes``: RSS also counts the pages
of Ray's object store the worker has read blocks from, which are the node's store, not the
worker's own). The baseline is the small corpus: with the corpus streamed, the large one must stay
within 1.5x of it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

WORDS = ["Alice", "Bob", "Paris", "Lima", "Acme", "Hooli", "flew", "to", "loved", "the", "film", "was", "great"]


def write_corpus(folder: Path, sentences: int) -> Path:
    """JSONL: ``text``, ``label`` and ``tokens``/``tags``, in files of 100,000 lines."""
    folder.mkdir(parents=True)
    for part in range(0, sentences, 100_000):
        with (folder / f"part-{part // 100_000:03d}.jsonl").open("w") as handle:
            for index in range(part, min(sentences, part + 100_000)):
                tokens = [WORDS[(index * 7 + offset) % len(WORDS)] for offset in range(6)] + [str(index)]
                tags = ["B-X" if token[0].isupper() else "O" for token in tokens]
                handle.write(json.dumps({"text": " ".join(tokens), "label": str(index % 2), "tokens": tokens,
                                         "tags": tags}) + "\n")
    return folder


def tiny_encoder(folder: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from mtl.inference.model_folder import resolve_encoder

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder("all-MiniLM-L6-v2"))
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def train_once(sentences: int) -> dict:
    """One epoch on a corpus of ``sentences``; the peak memory of the driver and of the worker."""
    import ray

    from mtl.config import validate_config
    from mtl.train.trainer import fit

    work = Path(tempfile.mkdtemp(prefix="mtl-train-memory-"))
    corpus = write_corpus(work / "corpus", sentences)
    encoder = tiny_encoder(work / "encoder")
    config = validate_config({
        "output": str(work / "run"),
        "model": {"encoder": str(encoder), "max_length": 16},
        "tasks": [{"name": "label", "kind": "classification", "train": {"path": str(corpus), "format": "jsonl"}},
                  {"name": "tags", "kind": "tagging", "train": {"path": str(corpus), "format": "jsonl"}}],
        "train": {"epochs": 1, "batch_size": 256, "num_workers": 1, "log_every_steps": 1000, "warmup_ratio": 0.0},
    })
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    summary = fit(config)
    metrics = json.loads(Path(summary.metrics_file).read_text())
    return {"sentences": sentences, "steps": summary.steps,
            "driver_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_peak_mib": metrics["peak_worker_rss_bytes"] / 1024**2,
            "worker_private_mib": metrics["peak_worker_private_rss_bytes"] / 1024**2}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(train_once(args.child)))
        return 0
    results = []
    for size in args.sizes:
        done = subprocess.run([sys.executable, __file__, "--child", str(size)], capture_output=True, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if done.returncode != 0:
            print(done.stderr[-3000:])
            return 1
        # the child's figures are its last JSON line (Ray may print after it)
        results.append(json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1]))
    print(f"\n{'sentences':>10} {'steps':>7} {'driver peak MiB':>16} {'worker peak MiB':>16} "
          f"{'worker private MiB':>19}")
    for row in results:
        print(f"{row['sentences']:>10} {row['steps']:>7} {row['driver_peak_mib']:>16.0f} "
              f"{row['worker_peak_mib']:>16.0f} {row['worker_private_mib']:>19.0f}")
    small, large = results[0], results[-1]
    ratios = {name: large[key] / small[key] for name, key in
              (("driver", "driver_peak_mib"), ("worker", "worker_peak_mib"), ("worker private", "worker_private_mib"))}
    print("ratio (largest / smallest): " + ", ".join(f"{name} {ratio:.2f}" for name, ratio in ratios.items())
          + " (target <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
