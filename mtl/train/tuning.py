"""Hyperparameter sweeps on Ray Tune: any config fields, each trial a ``jobs.train`` run.

A search space file names config fields by their dotted path and gives each a distribution::

    samples: 8                  # trials (grid values multiply them, as in Ray Tune)
    grace_period: 1             # evaluations every trial gets before ASHA may stop it
    reduction_factor: 2         # ASHA keeps the best 1/reduction_factor at each rung
    space:
      train.learning_rate: {loguniform: [2.0e-5, 2.0e-4]}
      train.loss_weighting: {choice: [static, uncertainty, dwa]}
      train.freeze_layers: {randint: [0, 3]}         # 0, 1 or 2 (the upper bound is excluded)
      model.encoder: {grid: [all-MiniLM-L6-v2, /models/other]}

Every trial is the TorchTrainer ``jobs.train`` builds (``mtl.train.trainer.fit``) with the trial's
values set, writing a normal run under ``<output>/trials/<trial id>``; Ray Train's reports reach
Ray Tune through its ``TuneReportCallback``, and ASHA stops trials whose combined score trails at
its rungs (one rung per evaluation). The best trial's config is written as a normal config file.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mtl import storage
from mtl.config import Config, field_problems, load_config, set_field, validate_config
from mtl.errors import ConfigError
from mtl.train.trainer import fit, with_absolute_paths

DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint")
METRIC = "combined"
TRIAL_DRIVER_MEMORY = 256 * 2**20


class Distribution(BaseModel):
    """One field's values: exactly one of the keys, a list of values or ``[low, high]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    choice: list | None = Field(default=None, min_length=1)
    grid: list | None = Field(default=None, min_length=1)
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Distribution:
        given = [name for name in DISTRIBUTIONS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {list(DISTRIBUTIONS)}, not {given or 'none'}")
        bounds = self.uniform or self.loguniform or self.randint
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"{given[0]}: {list(bounds)} is not [low, high] with low < high")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform: the low end must be above 0")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in DISTRIBUTIONS if getattr(self, name) is not None)

    def edge_values(self) -> list:
        """Values that stand for the whole range when checking the field accepts it."""
        values = getattr(self, self.kind)
        return list(values) if self.kind != "randint" else [values[0], values[1] - 1]

    def to_tune(self):
        from ray import tune

        values = getattr(self, self.kind)
        return {"choice": lambda: tune.choice(values), "grid": lambda: tune.grid_search(values),
                "uniform": lambda: tune.uniform(*values), "loguniform": lambda: tune.loguniform(*values),
                "randint": lambda: tune.randint(*values)}[self.kind]()


class SearchSpace(BaseModel):
    """A sweep: the fields and their distributions, the number of trials, and ASHA's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    space: dict[str, Distribution] = Field(min_length=1)
    samples: int = Field(default=8, ge=1)
    max_concurrent: int | None = Field(default=None, ge=1)
    grace_period: int = Field(default=1, ge=1)
    reduction_factor: float = Field(default=2.0, gt=1)


@dataclass
class Trial:
    """One trial's values, best combined score, evaluations reported, and run folder."""

    trial_id: str
    values: dict
    combined: float
    evaluations: int
    output: str
    error: str | None = None


@dataclass
class SweepResult:
    trials: list[Trial]
    best: Trial
    best_config: str      # the config file written for the best trial


def load_space(path: str | Path, base: dict) -> SearchSpace:
    """Read a search space file and check that every value it can take makes a valid config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config error: no such search space file '{path}'")
    try:
        space = SearchSpace.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValidationError as error:
        raise ConfigError(f"config error: {path}: {field_problems(error, top='<top>')}") from None
    for key, distribution in space.space.items():
        for value in distribution.edge_values():
            try:
                config_with(base, {key: value})
            except ConfigError as error:
                raise ConfigError(f"config error: {path}: space.{key}: the value {value!r} makes a bad config: "
                                  f"{error}") from None
    return space


def config_with(base: dict, values: dict, output: str | None = None) -> Config:
    """The raw config ``base`` with each dotted field of ``values`` set (and ``output``), validated."""
    raw = copy.deepcopy(base)
    for key, value in values.items():
        set_field(raw, key, value)
    if output is not None:
        raw["output"] = output
    return validate_config(raw, source="<trial>")


def run_trial(values: dict, *, base: dict, output: str) -> None:
    """A Tune trial: ``jobs.train``'s run with ``values`` set, reporting every evaluation to Tune."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = ray.tune.get_context().get_trial_id()
    fit(config_with(base, values, output=storage.join(output, "trials", trial_id)), callbacks=[TuneReportCallback()])


def sweep(config_path: str, space_path: str, overrides: list[str] = (), output: str | None = None) -> SweepResult:
    """Run the sweep; write the best trial's config to ``<output>/best_config.yaml``."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    config = load_config(config_path, list(overrides))
    # every path absolute: a trial runs in a Tune actor, wherever Tune puts it
    base = with_absolute_paths(config).model_dump(mode="json")
    output = storage.absolute(output or storage.join(config.output, "tune"))
    space = load_space(space_path, base)
    # a trial only drives its TorchTrainer, whose workers hold the CPUs and GPUs; Tune needs the
    # trial to ask for something, so it asks for the memory a driver takes
    trainable = tune.with_resources(tune.with_parameters(run_trial, base=base, output=output),
                                    {"cpu": 0, "memory": TRIAL_DRIVER_MEMORY})
    tuner = tune.Tuner(
        trainable,
        param_space={key: distribution.to_tune() for key, distribution in space.space.items()},
        tune_config=tune.TuneConfig(
            metric=METRIC, mode="max", num_samples=space.samples,
            max_concurrent_trials=space.max_concurrent or concurrent_trials(config, ray.cluster_resources()),
            scheduler=ASHAScheduler(time_attr="training_iteration", grace_period=space.grace_period,
                                    reduction_factor=space.reduction_factor, max_t=10_000)),
        run_config=tune.RunConfig(name="mtl-tune", storage_path=storage.join(output, "ray"), verbose=0),
    )
    results = tuner.fit()
    trials = [_trial(result, output) for result in results]
    finished = [trial for trial in trials if trial.error is None and not math.isnan(trial.combined)]
    if not finished:
        raise RuntimeError("no trial finished: " + "; ".join(f"{trial.trial_id}: {trial.error}" for trial in trials))
    best = max(finished, key=lambda trial: trial.combined)
    best_config = storage.join(output, "best_config.yaml")
    chosen = config_with(base, best.values).model_dump(mode="json", exclude_defaults=True)
    storage.write_bytes(best_config, yaml.safe_dump(chosen, sort_keys=False).encode())
    return SweepResult(trials=trials, best=best, best_config=best_config)


def concurrent_trials(config: Config, resources: dict) -> int:
    """How many trials the cluster runs at once: its CPUs (or GPUs) over what one trial's workers take."""
    settings = config.train
    if settings.use_gpu and resources.get("GPU"):
        return max(1, int(resources["GPU"] // settings.num_workers))
    return max(1, int(resources.get("CPU", 1) // (settings.num_workers * settings.cpus_per_worker)))


def _trial(result, output: str) -> Trial:
    history = result.metrics_dataframe
    scores = history[METRIC].tolist() if history is not None and METRIC in history else []
    trial_id = result.metrics.get("trial_id") if result.metrics else Path(result.path).name
    return Trial(trial_id=trial_id, values={key: value for key, value in result.config.items()},
                 combined=max(scores) if scores else float("nan"), evaluations=len(scores),
                 output=storage.join(output, "trials", trial_id),
                 error=None if result.error is None else str(result.error).splitlines()[0])
