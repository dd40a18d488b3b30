"""Distil a trained multi-task model into a smaller, faster student, on Ray Train.

    python -m jobs.distill --teacher runs/conll_sst2/best --config jobs/configs/conll_sst2.yaml
    python -m jobs.distill --teacher models:/conll_sst2@production --config C --keep-layers 2
    python -m jobs.distill --teacher T --config C --student sentence-transformers/paraphrase-MiniLM-L3-v2
    python -m jobs.distill --teacher T --config C --corpus s3://bucket/unlabeled/*.txt

The student is the teacher's own encoder with every other layer dropped (``--keep-layers``), or any
encoder sharing its tokenizer (``--student``). It trains on the config's tasks to match the
teacher's heads (soft targets) and sentence embedding, as the config's ``distill:`` section says
(defaults otherwise), and is written as a normal model folder under the config's ``output``. With
``--corpus``, the teacher first labels that unlabeled text on Ray Data, and the student trains on it too.
"""

from __future__ import annotations

import argparse
import json
import sys

from mtl.config import Config, load_config
from mtl.errors import ConfigError, DataError, ModelFolderError


def keep_layers(text: str) -> str | int | list[int]:
    """``every_other``, N (the lowest N layers) or a comma-separated list of layer indices."""
    if text == "every_other":
        return text
    numbers = [int(part) for part in text.split(",")]
    return numbers if "," in text else numbers[0]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.distill", description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="a model folder (local or a URI) or models:/NAME@ALIAS")
    parser.add_argument("--config", required=True, help="the YAML config of the tasks and data to distil on")
    parser.add_argument("--student", help="an encoder name or path for the student (default: the teacher pruned)")
    parser.add_argument("--keep-layers", type=keep_layers, default="every_other",
                        help="the teacher's layers the student keeps: every_other (default), N, or 0,2,4")
    parser.add_argument("--corpus", help="unlabeled text (file, folder or glob, local or a URI) for the teacher to "
                        "label and the student to learn from as well (distill.corpus)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set distill.temperature=4 (repeatable)")
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray's own logs and the workers' output here (always in Ray's log files)")
    return parser.parse_args(argv)


def distill_config(args: argparse.Namespace) -> Config:
    """The config with the student and ``distill:`` set; ``--set distill.*`` overrides apply to a
    config without a ``distill:`` section too (the teacher, quoted, is set before them)."""
    from mtl.train.teacher import student_config

    config = load_config(args.config, [f"distill.teacher={json.dumps(args.teacher)}", *args.overrides])
    return student_config(config, args.teacher, student=args.student, keep_layers=args.keep_layers,
                          corpus=args.corpus)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from mtl.runtime.cluster import connect
        from mtl.train.trainer import fit

        config = distill_config(args)
        connect(args.verbose)
        summary = fit(config, progress=not args.verbose)
    except (ConfigError, DataError, ModelFolderError) as error:
        print(error, file=sys.stderr)
        return 2
    print(summary.table())
    print(f"metrics: {summary.metrics_file}")
    print(f"student: {summary.best_model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
