"""jobs.evaluate end to end: the command line, Ray Data actors, and k-fold cross-validation."""

import json

import pytest
from conftest import DEMO
from test_evaluation import NER, SENTIMENT
from train_configs import demo_config

from jobs import evaluate as evaluate_job
from mtl.evaluation.run import EvaluationOptions, evaluate_sets, local_scorer, model_task_specs, read_eval_set
from mtl.inference.predictor import Predictor


def test_the_command_scores_one_task_from_a_file_and_names_a_bad_field(tiny_model_dir, tmp_path, capsys):
    output = tmp_path / "report"
    code = evaluate_job.main(["--model", str(tiny_model_dir), "--task", "sentiment", "--data",
                              str(DEMO / "eval.jsonl"), "--column", "label_column=sentiment",
                              "--output", str(output), "--resamples", "50", "--perturbations", "lowercase"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "sentiment" in printed and "accuracy" in printed and "drop lowercase" in printed
    report = json.loads((output / "report.json").read_text())
    assert set(report["tasks"]) == {"sentiment"} and report["tasks"]["sentiment"]["examples"] == 100
    code = evaluate_job.main(["--model", str(tiny_model_dir), "--task", "sentiment", "--data",
                              str(DEMO / "eval.jsonl"), "--column", "label_colum=sentiment", "--output", str(output)])
    assert code == 2 and "label_colum" in capsys.readouterr().err


@pytest.mark.ray
def test_ray_data_actors_score_exactly_what_this_process_scores(ray_local, tiny_model_dir):
    from mtl.evaluation.distributed import ray_scorer

    specs = model_task_specs(str(tiny_model_dir))
    sets = {"sentiment": read_eval_set("sentiment", SENTIMENT, specs), "ner": read_eval_set("ner", NER, specs)}
    options = EvaluationOptions(resamples=50, seed=0)
    here = evaluate_sets(sets, local_scorer(Predictor.from_folder(tiny_model_dir)), options)
    on_actors = evaluate_sets(sets, ray_scorer(str(tiny_model_dir), actors=2, rows_per_batch=8, threads=1), options)
    # the same answers; the floats may differ in the last bits (other threads, other batches)
    assert _flat(on_actors).keys() == _flat(here).keys()
    for key, value in _flat(here).items():
        assert _flat(on_actors)[key] == (pytest.approx(value, abs=1e-5) if isinstance(value, float) else value), key


def _flat(value, path: str = "") -> dict:
    """Every leaf of nested dicts and lists by its path."""
    if isinstance(value, dict):
        return {key: leaf for name, item in value.items() for key, leaf in _flat(item, f"{path}/{name}").items()}
    if isinstance(value, list):
        return {key: leaf for index, item in enumerate(value) for key, leaf in _flat(item, f"{path}/{index}").items()}
    return {path: value}


@pytest.mark.ray
@pytest.mark.slow
def test_cross_validation_trains_each_fold_and_scores_it_on_the_rows_it_did_not_see(ray_local, tiny_encoder_dir,
                                                                                   tmp_path):
    from mtl.config import validate_config
    from mtl.train.cross_validation import cross_validate, fold_rows

    config = validate_config(demo_config(str(tiny_encoder_dir), str(tmp_path / "cv"), epochs=1,
                                         max_examples_per_task=40))
    dealt = fold_rows(config, 2)
    assert [len(fold) for fold in dealt["sentiment"]] == [20, 20]
    assert not {row["text"] for row in dealt["sentiment"][0]} & {row["text"] for row in dealt["sentiment"][1]}
    summary = cross_validate(config, folds=2, output=str(tmp_path / "cv"))
    for task in ("sentiment", "ner"):
        values = summary["tasks"][task]
        assert len(values["per_fold"]) == 2 and all(0 <= value <= 1 for value in values["per_fold"])
        assert values["mean_ci"][0] <= values["mean"] <= values["mean_ci"][1]
    for fold in (0, 1):
        held_out = (tmp_path / "cv" / "cv" / f"fold-{fold}" / "data" / "sentiment.heldout.jsonl").read_text()
        trained = (tmp_path / "cv" / "cv" / f"fold-{fold}" / "data" / "sentiment.train.jsonl").read_text()
        assert len(held_out.splitlines()) == 20 and len(trained.splitlines()) == 20
        assert not set(held_out.splitlines()) & set(trained.splitlines())
        assert (tmp_path / "cv" / "cv" / f"fold-{fold}" / "best" / "README.md").is_file()
