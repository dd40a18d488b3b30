"""Export a model folder to ONNX (float32 and int8), checked against PyTorch, into its onnx/ folder.

    python -m jobs.export --model runs/demo/best
    python -m jobs.label --model runs/demo/best --backend onnx --precision int8 ...

The folder may be local or a URI. Every exported file is checked against PyTorch on a sample of
sentences (``--sample FILE``: one per line, to check on your own data) and nothing is written when
one misses its tolerance.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mtl.errors import ModelFolderError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.export", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder written by jobs.train; local path or URI")
    parser.add_argument("--sample", type=Path, help="text file, one sentence a line, to check the export on")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from mtl.inference.export import export_onnx

    sample = None
    if args.sample:
        sample = [line for line in args.sample.read_text().splitlines() if line.strip()]
        if not sample:
            print(f"error: --sample {args.sample}: no sentences in it", file=sys.stderr)
            return 2
    try:
        report = export_onnx(args.model, sample=sample)
    except (ModelFolderError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"float32: {report.files['float32']} (largest difference from PyTorch {report.float32_max_difference:.1e})")
    print(f"int8:    {report.files['int8']} for {report.cpu}{', 7-bit weights' if report.reduce_range else ''} "
          f"(embedding cosine to float32: mean {report.int8_mean_cosine:.4f}, lowest {report.int8_min_cosine:.4f}; "
          f"labels kept {report.int8_label_agreement:.1%})")
    print(f"exported into {report.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
