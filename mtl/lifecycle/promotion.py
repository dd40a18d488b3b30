"""``promote --if-better``: a new version takes the ``production`` alias only if, on a fixed held-out
set, it is not worse than the version that holds it on any task (``mtl.evaluation.comparison``)."""

from __future__ import annotations

from dataclasses import dataclass

from mtl.config import Config
from mtl.evaluation.comparison import compare
from mtl.evaluation.run import eval_sets_from_config, local_scorer, model_task_specs
from mtl.inference.predictor import Predictor
from mtl.lifecycle import registry


@dataclass(frozen=True)
class PromotionDecision:
    promoted: bool
    version: str
    production: str | None          # the version that held the alias before
    comparison: dict                # per task: scores, difference, its interval, worse
    reason: str


def promote_if_better(name: str, version: str, config: Config, *, reason: str = "", resamples: int = 1000,
                      seed: int = 0, uri: str | None = None) -> PromotionDecision:
    """Compare ``name`` version ``version`` with ``name@production`` on ``config``'s eval data and
    move the alias when no task is worse; the first version of a model is promoted unopposed."""
    candidate_folder = registry.resolve_model(f"{registry.REGISTRY_SCHEME}{name}/{version}", uri)
    production = registry.current_version(name, uri=uri)
    if production is None:
        note = reason or "first version: nothing to compare with"
        registry.move_alias(name, version, reason=note, uri=uri)
        return PromotionDecision(True, str(version), None, {}, note)
    production_folder = registry.resolve_model(f"{registry.REGISTRY_SCHEME}{name}/{production}", uri)
    sets = eval_sets_from_config(config, model_task_specs(candidate_folder))
    comparison = compare(sets, local_scorer(Predictor.from_folder(candidate_folder)),
                         local_scorer(Predictor.from_folder(production_folder)), resamples=resamples, seed=seed)
    worse = [task for task, result in comparison.items() if result["worse"]]
    if worse:
        return PromotionDecision(False, str(version), production, comparison,
                                 f"worse than version {production} on {', '.join(worse)}")
    summary = ", ".join(f"{task} {result['difference']:+.4f}" for task, result in comparison.items())
    note = f"{reason + '; ' if reason else ''}not worse than version {production} ({summary})"
    registry.move_alias(name, version, reason=note, uri=uri)
    return PromotionDecision(True, str(version), production, comparison, note)


def comparison_table(decision: PromotionDecision) -> str:
    """Per task both scores and their difference (none for a first version), then the verdict."""
    lines = [f"{'task':<14} {'candidate':>10} {'production':>11} {'difference [95% interval]':>36}"
             ] if decision.comparison else []
    for task, result in decision.comparison.items():
        low, high = result["difference_ci"]
        interval = f"{result['difference']:+.4f} [{low:+.4f}, {high:+.4f}]"
        lines.append(f"{task:<14} {result['candidate']:>10.4f} {result['production']:>11.4f} {interval:>36}"
                     + ("  worse" if result["worse"] else ""))
    verdict = "promoted" if decision.promoted else "not promoted"
    lines.append(f"version {decision.version}: {verdict} ({decision.reason})")
    return "\n".join(lines)
