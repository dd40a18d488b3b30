"""Versions of a registered model in MLflow: list them, promote one to production, roll back.

    python -m jobs.registry list --name demo
    python -m jobs.registry promote --name demo --version 2 --reason "better NER on the June data"
    python -m jobs.registry promote --name demo --version 3 --if-better --config jobs/configs/demo.yaml
    python -m jobs.registry rollback --name demo --reason "complaints about ORG entities"

The store is --tracking-uri, else $MLFLOW_TRACKING_URI, else runs/mlflow.db. With --if-better,
exit status 3 means the version was compared and not promoted.
"""

from __future__ import annotations

import argparse
import sys

from mtl.errors import ConfigError, DataError, ModelFolderError

NOT_PROMOTED = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.registry", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="every version, newest first, and the alias history")
    promote = commands.add_parser("promote", help="point the production alias at a version")
    rollback = commands.add_parser("rollback", help="point production back at the version before")
    for command in (listing, promote, rollback):
        command.add_argument("--name", required=True, help="registered model name (config mlflow.register_as)")
        command.add_argument("--tracking-uri", help="MLflow tracking and registry URI")
    promote.add_argument("--version", required=True)
    promote.add_argument("--if-better", action="store_true",
                         help="only if not worse than production on --config's eval data on any task")
    promote.add_argument("--config", help="with --if-better: whose eval data (and embedding_eval) to compare on")
    promote.add_argument("--resamples", type=int, default=1000, help="with --if-better: bootstrap resamples")
    for command in (promote, rollback):
        command.add_argument("--reason", default="", help="why; recorded with the move")
    args = parser.parse_args(argv)
    if args.command == "promote" and args.if_better and not args.config:
        parser.error("--if-better needs --config (the held-out data to compare on)")
    if args.command == "rollback" and not args.reason:
        parser.error("rollback needs --reason")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from mtl.lifecycle import registry

    try:
        if args.command == "list":
            print(_listing(registry.list_versions(args.name, args.tracking_uri),
                           registry.alias_history(args.name, args.tracking_uri)))
        elif args.command == "rollback":
            entry = registry.rollback(args.name, reason=args.reason, uri=args.tracking_uri)
            print(f"{args.name}@production: version {entry['previous']} -> {entry['version']} ({entry['reason']})")
        elif args.if_better:
            return _promote_if_better(args)
        else:
            entry = registry.move_alias(args.name, args.version, reason=args.reason, uri=args.tracking_uri)
            print(f"{args.name}@production: version {entry['previous']} -> {entry['version']}")
    except (ConfigError, DataError, ModelFolderError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _promote_if_better(args: argparse.Namespace) -> int:
    from mtl.config import load_config
    from mtl.lifecycle.promotion import comparison_table, promote_if_better

    decision = promote_if_better(args.name, args.version, load_config(args.config), reason=args.reason,
                                 resamples=args.resamples, uri=args.tracking_uri)
    print(comparison_table(decision))
    return 0 if decision.promoted else NOT_PROMOTED


def _listing(versions: list[dict], history: list[dict]) -> str:
    lines = [f"{'version':<8} {'aliases':<12} {'model':<13} {'created':<26} {'combined':>9}  reason"]
    for row in versions:
        combined = f"{row['combined']:.4f}" if row["combined"] is not None else "-"
        lines.append(f"{row['version']:<8} {','.join(row['aliases']) or '-':<12} {row['model'] or '-':<13} "
                     f"{row['created']:<26} {combined:>9}  {row['reason'] or ''}")
    lines += ["", "alias history:"] + [f"  {entry['time']} {entry['action']} {entry['alias']}: "
                                      f"{entry['previous']} -> {entry['version']} ({entry['reason']})"
                                      for entry in history]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
