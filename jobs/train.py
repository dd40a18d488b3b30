"""Train the multi-task model with Ray Train.

    python -m jobs.train --config jobs/configs/demo.yaml [--set train.epochs=1 ...]
    python -m jobs.train --config jobs/configs/demo.yaml --init-from models:/demo@production
    ray job submit --working-dir . -- python -m jobs.train --config jobs/configs/demo.yaml

Without a cluster Ray starts in this process; under ``ray job submit`` it joins the cluster.
"""

from __future__ import annotations

import argparse
import sys

from mtl.config import load_config
from mtl.errors import ConfigError, DataError, ModelFolderError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML config (see jobs/configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set train.epochs=1 (repeatable)")
    parser.add_argument("--init-from", metavar="MODEL",
                        help="continue from a trained model: a model folder or models:/NAME@ALIAS "
                             "(sets model.init_from)")
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray's own logs and the workers' output here (always in Ray's log files)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        overrides = [*args.overrides, *([f"model.init_from={args.init_from}"] if args.init_from else [])]
        config = load_config(args.config, overrides)
        from mtl.runtime.cluster import connect
        from mtl.train.trainer import fit

        connect(args.verbose)
        summary = fit(config, progress=not args.verbose)
    except (ConfigError, DataError, ModelFolderError) as error:
        print(error, file=sys.stderr)
        return 2
    print(summary.table())
    print(f"metrics: {summary.metrics_file}")
    print(f"plots: {' '.join(str(path) for path in summary.plots)}")
    for start, nodes in enumerate(summary.placements):
        print(f"workers ({'start' if start == 0 else f'restart {start}'}): "
              + ", ".join(f"rank {rank} on node {node}" for rank, node in enumerate(nodes)))
    print(f"device: {summary.devices[-1]}")
    print(f"best model: {summary.best_model}")
    if summary.tracked:
        registered = (f"; registered as {config.mlflow.register_as} version {summary.tracked.registered_version}"
                      if summary.tracked.registered_version else "")
        print(f"mlflow: run {summary.tracked.run_id} in {summary.tracked.tracking_uri}{registered}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
