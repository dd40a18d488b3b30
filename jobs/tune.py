"""Sweep config fields with Ray Tune (ASHA early stopping); every trial is a jobs.train run.

    python -m jobs.tune --config jobs/configs/demo.yaml --space jobs/configs/tune_space.yaml
    ray job submit --working-dir . -- python -m jobs.tune --config C --space S [--set ...]

Prints every trial's values and best combined score, and writes the best trial's config as a
normal config file (``<output>/tune/best_config.yaml``), ready for ``python -m jobs.train``.
"""

from __future__ import annotations

import argparse
import sys

from mtl.errors import ConfigError, DataError, ModelFolderError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.tune", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the YAML config every trial starts from")
    parser.add_argument("--space", required=True, help="the search space file (docs/training.md#sweeps)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the base config, e.g. --set train.epochs=1 (repeatable)")
    parser.add_argument("--output", help="where the trials and best_config.yaml go (default: <output>/tune)")
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray's own logs and the trials' output here (always in Ray's log files)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from mtl.runtime.cluster import connect
        from mtl.train.tuning import sweep

        connect(args.verbose)
        result = sweep(args.config, args.space, args.overrides, args.output)
    except (ConfigError, DataError, ModelFolderError) as error:
        print(error, file=sys.stderr)
        return 2
    fields = sorted({key for trial in result.trials for key in trial.values})
    print(f"{'trial':<12} {'combined':>9} {'evals':>5}  " + "  ".join(fields))
    for trial in sorted(result.trials, key=lambda trial: -trial.combined if trial.combined == trial.combined else 1):
        values = "  ".join(str(trial.values.get(key)) for key in fields)
        status = f"  failed: {trial.error}" if trial.error else ""
        print(f"{trial.trial_id:<12} {trial.combined:>9.4f} {trial.evaluations:>5}  {values}{status}")
    print(f"best trial: {result.best.trial_id} (combined {result.best.combined:.4f}): "
          + ", ".join(f"{key}={value}" for key, value in result.best.values.items()))
    print(f"best config: {result.best_config}")
    print(f"best trial's model: {result.best.output}/best")
    return 0


if __name__ == "__main__":
    sys.exit(main())
