"""Score a model folder on labeled data: metrics with 95% intervals, error analysis, robustness.

    python -m jobs.evaluate --model runs/demo/best --config jobs/configs/demo.yaml --output runs/demo/evaluation
    python -m jobs.evaluate --model runs/demo/best --task sentiment --data data/demo/eval.jsonl \
        --column label_column=sentiment
    python -m jobs.evaluate --config jobs/configs/demo.yaml --cv 5 --output runs/demo/cv

Writes report.json, report.md and PNG plots to --output and prints a short table.
"""

from __future__ import annotations

import argparse
import json
import sys

from mtl.errors import ConfigError, DataError, ModelFolderError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (local path or URI) or models:/NAME@ALIAS; not with --cv")
    parser.add_argument("--config", help="score on the eval data of this config's tasks and its embedding_eval")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field (repeatable)")
    parser.add_argument("--task", help="score one task (or 'embedding': scored sentence pairs) on --data")
    parser.add_argument("--data", help="labeled file for --task, read as training reads it")
    parser.add_argument("--column", action="append", default=[], metavar="FIELD=VALUE",
                        help="how to read --data: any data source field, e.g. format=tsv, text_column=1, "
                             "header=false, score_range=[0,5] (repeatable)")
    parser.add_argument("--output", default="runs/evaluation", help="report folder; local path or URI")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (0: no intervals)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shown", type=int, default=10, help="examples per error list")
    parser.add_argument("--perturbations", default="typos,lowercase,punctuation",
                        help="comma-separated robustness checks, or 'none'")
    parser.add_argument("--actors", type=int, help="predict on a Ray Data pool of N actors (default: here)")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    parser.add_argument("--precision", choices=["float32", "bfloat16", "int8"], default="float32")
    parser.add_argument("--update-card", action="store_true",
                        help="store the results in the model folder (evaluation.json) and refresh its README.md")
    parser.add_argument("--cv", type=int, metavar="K", help="k-fold cross-validation of --config (trains K models)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cv and (args.model or not args.config):
        sys.exit("error: --cv trains its own models from --config; give --config and no --model")
    if not args.cv and (not args.model or bool(args.config) == bool(args.task and args.data)):
        sys.exit("error: give --model, and either --config or --task with --data")
    from mtl.config import load_config
    from mtl.evaluation import run
    from mtl.evaluation.report import summary_table, write_report

    try:
        config = load_config(args.config, args.overrides) if args.config else None
        if args.cv:
            return _cross_validate(config, args)
        from mtl.lifecycle.registry import resolve_model

        args.model = resolve_model(args.model)
        specs = run.model_task_specs(args.model)
        sets = run.eval_sets_from_config(config, specs) if config else \
            {args.task: run.read_eval_set(args.task, run.source_from_fields(args.data, args.column), specs)}
        perturbations = () if args.perturbations == "none" else tuple(args.perturbations.split(","))
        options = run.EvaluationOptions(resamples=args.resamples, seed=args.seed, shown=args.shown,
                                        perturbations=perturbations)
        report = run.evaluate_model(args.model, sets, _scorer(args), options)
        files = write_report(report, args.output)
        if args.update_card:
            files.append(run.update_model_card(args.model, report))
    except (ConfigError, DataError, ModelFolderError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary_table(report))
    print(f"written: {' '.join(files)}")
    return 0


def _scorer(args: argparse.Namespace):
    if args.actors:
        from mtl.evaluation.distributed import ray_scorer
        from mtl.runtime.cluster import connect

        connect(verbose=True)
        return ray_scorer(args.model, actors=args.actors, backend=args.backend, precision=args.precision)
    from mtl.evaluation.run import local_scorer
    from mtl.inference.predictor import Predictor

    return local_scorer(Predictor.from_folder(args.model, backend=args.backend, precision=args.precision))


def _cross_validate(config, args: argparse.Namespace) -> int:
    from mtl import storage
    from mtl.runtime.cluster import connect
    from mtl.train.cross_validation import cross_validate, cross_validation_table

    connect(verbose=True)
    summary = cross_validate(config, folds=args.cv, output=args.output)
    path = storage.join(args.output, "cv_report.json")
    storage.write_text(path, json.dumps(summary, indent=2))
    print(cross_validation_table(summary))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
