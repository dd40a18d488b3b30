#!/usr/bin/env bash
# Quickstart: train on the bundled demo data, label a sample corpus with the trained model, show it.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
python -m jobs.train --config jobs/configs/demo.yaml
python -m jobs.label --model runs/demo/best --input data/demo/corpus.txt --output runs/demo/labels --overwrite
python - <<'PY'
import pandas as pd

rows = pd.read_parquet("runs/demo/labels")
print(f"\n{len(rows)} rows, columns: {list(rows.columns)}")
for row in rows.head(5).itertuples():
    entities = ", ".join(f"{e['text']} ({e['label']})" for e in row.ner)
    print(f"{row.text}\n  sentiment: {row.sentiment} ({row.sentiment_score:.2f})  entities: {entities}")
PY
