#!/usr/bin/env bash
# Quickstart: train on the bundled demo data, then ask the trained model about a few sentences.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
python -m jobs.train --config jobs/configs/demo.yaml
python - <<'PY'
from mtl.predict import Predictor

predictor = Predictor.from_folder("runs/demo/best")
with open("data/demo/corpus.txt") as corpus:
    texts = [next(corpus).strip() for _ in range(5)]
for text, answer in zip(texts, predictor.predict(texts)):
    sentiment = answer.labels["sentiment"]
    entities = ", ".join(f"{e.text} ({e.label})" for e in answer.entities["ner"])
    print(f"{text}\n  sentiment: {sentiment.label} ({sentiment.score:.2f})  entities: {entities}")
PY
