"""Sweeps: the search space file is checked against the config before any trial starts, and a
tiny sweep on the session's Ray stops a trailing trial (ASHA) and writes the best config."""

import json
from pathlib import Path

import pytest
import yaml
from train_configs import demo_config

from mtl.config import load_config
from mtl.errors import ConfigError
from mtl.train.tuning import Distribution, concurrent_trials, config_with, load_space, sweep


def write(path: Path, content: dict) -> Path:
    path.write_text(yaml.safe_dump(content))
    return path


@pytest.fixture
def base(tiny_encoder_dir, tmp_path):
    return demo_config(str(tiny_encoder_dir), str(tmp_path / "run"))


def test_a_space_of_valid_fields_loads_and_sets_nested_fields(base, tmp_path):
    space = load_space(write(tmp_path / "space.yaml", {"samples": 3, "space": {
        "train.learning_rate": {"loguniform": [1e-5, 1e-3]}, "tasks.1.weight": {"choice": [0.5, 2.0]},
        "train.freeze_layers": {"randint": [0, 2]}}}), base)
    assert space.samples == 3 and space.space["train.freeze_layers"].edge_values() == [0, 1]
    config = config_with(base, {"tasks.1.weight": 2.0, "train.loss_weighting": "dwa"}, output="elsewhere")
    assert config.tasks[1].weight == 2.0 and config.train.loss_weighting == "dwa" and config.output == "elsewhere"
    assert base["train"].get("loss_weighting") is None  # the base is left as it was


@pytest.mark.parametrize(("space", "message"), [
    ({"train.learning_rte": {"choice": [1e-4]}}, r"space.train.learning_rte: .*learning_rte: Extra inputs"),
    ({"train.loss_weighting": {"choice": ["static", "gradnorm"]}}, r"space.train.loss_weighting: the value 'gradnorm'"),
    ({"train.epochs": {"randint": [0, 3]}}, r"space.train.epochs: the value 0 makes a bad config"),
    ({"train.learning_rate": {"uniform": [1e-3, 1e-5]}}, r"space.train.learning_rate: .*not \[low, high\]"),
    ({"train.learning_rate": {"choice": [1e-4], "uniform": [1e-5, 1e-3]}}, "give exactly one of"),
    ({"train.learning_rate": {"loguniform": [0, 1e-3]}}, "the low end must be above 0"),
])
def test_a_bad_space_is_an_error_naming_the_file_and_field(base, tmp_path, space, message):
    path = write(tmp_path / "space.yaml", {"space": space})
    with pytest.raises(ConfigError, match=message) as raised:
        load_space(path, base)
    assert str(path) in str(raised.value)


def test_trials_run_side_by_side_as_far_as_the_cluster_has_room(base):
    config = config_with(base, {"train.num_workers": 2})
    assert concurrent_trials(config, {"CPU": 8}) == 4
    assert concurrent_trials(config, {"CPU": 1}) == 1
    assert concurrent_trials(config_with(base, {"train.use_gpu": True}), {"CPU": 8, "GPU": 3}) == 3


def test_distribution_kinds_map_to_ray_tune():
    from ray import tune

    assert Distribution(grid=[1, 2]).to_tune() == tune.grid_search([1, 2])
    assert Distribution(loguniform=(1e-5, 1e-3)).to_tune().lower == 1e-5


@pytest.mark.ray
@pytest.mark.slow
def test_a_sweep_stops_the_trailing_trial_and_writes_the_best_config(ray_local, base, tmp_path):
    base["train"]["epochs"] = 3
    config = write(tmp_path / "config.yaml", base)
    # one trial at a time: the second one (heads that cannot learn) trails the first at the first rung
    space = write(tmp_path / "space.yaml", {"samples": 1, "max_concurrent": 1, "grace_period": 1,
                                            "space": {"train.head_learning_rate": {"grid": [1e-2, 1e-9]}}})
    result = sweep(str(config), str(space), output=str(tmp_path / "sweep"))
    by_rate = {trial.values["train.head_learning_rate"]: trial for trial in result.trials}
    assert set(by_rate) == {1e-2, 1e-9}
    assert by_rate[1e-2].evaluations == 3     # ran to the end
    # ASHA stopped it at its first rung (an evaluation more may be on its way before the stop lands)
    assert by_rate[1e-9].evaluations < 3
    assert by_rate[1e-9].combined < by_rate[1e-2].combined
    assert result.best.values == {"train.head_learning_rate": 1e-2}
    best = load_config(result.best_config)
    assert best.train.head_learning_rate == 1e-2 and best.train.epochs == 3
    metrics = json.loads((Path(result.best.output) / "metrics.json").read_text())
    assert metrics["best"]["combined"] == pytest.approx(result.best.combined)
