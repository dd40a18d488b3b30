"""A checkpoint's state saves itself and loads back into freshly built objects, without Ray."""

import pytest
import torch

from mtl.config import ModelConfig, TrainConfig
from mtl.inference.model_folder import build_model
from mtl.train.optim import build_optimizer, build_scheduler, parameter_groups
from mtl.train.state import RunState, TrainState
from mtl.train.weighting import LossWeighting

SETTINGS = TrainConfig(warmup_steps=2, loss_weighting="uncertainty")


def fresh_run(tiny_encoder_dir, demo_specs) -> RunState:
    torch.manual_seed(1)
    bundle = build_model(ModelConfig(encoder=str(tiny_encoder_dir), max_length=16), demo_specs)
    weighting = LossWeighting(strategy="uncertainty", tasks=[spec.name for spec in demo_specs])
    optimizer = build_optimizer(parameter_groups(bundle.model, weighting, SETTINGS, {}))
    return RunState(bundle=bundle, weighting=weighting, optimizer=optimizer,
                    scheduler=build_scheduler(optimizer, SETTINGS, total_steps=10), progress=TrainState())


def train_steps(run: RunState, steps: int) -> None:
    inputs = run.bundle.featurizer.encode(texts=["a fine day", "Bob is in Paris"]).inputs
    for _ in range(steps):
        output = run.bundle.model(**inputs, tasks=["sentiment"], labels={"sentiment": torch.tensor([0, 1])})
        run.weighting("sentiment", output.losses["sentiment"]).backward()
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad()
        run.progress.step += 1


def test_a_saved_run_loads_back_whole_with_the_optimizer_state_beside_its_parameters(
        tiny_encoder_dir, demo_specs, tmp_path):
    run = fresh_run(tiny_encoder_dir, demo_specs)
    train_steps(run, 3)
    run.progress.draws = {"sentiment": 3}
    run.save(tmp_path, specs=demo_specs, metadata={"step": 3}, random_states=[])

    resumed = fresh_run(tiny_encoder_dir, demo_specs)
    resumed.bundle.model.to(torch.device("cpu"))  # where prepare_model puts it on a CPU worker
    resumed.load(tmp_path)
    assert resumed.progress.step == 3 and resumed.progress.draws == {"sentiment": 3} and resumed.progress.resumes == 1
    for name, tensor in run.bundle.model.state_dict().items():
        torch.testing.assert_close(resumed.bundle.model.state_dict()[name], tensor, msg=name)
    torch.testing.assert_close(resumed.weighting.log_variances, run.weighting.log_variances)
    assert resumed.scheduler.get_last_lr() == run.scheduler.get_last_lr()
    parameters = [parameter for group in resumed.optimizer.param_groups for parameter in group["params"]]
    stepped = [parameter for parameter in parameters if resumed.optimizer.state.get(parameter)]
    assert stepped, "the optimizer state was not loaded"
    for parameter in stepped:
        for value in resumed.optimizer.state[parameter].values():
            if torch.is_tensor(value) and value.dim():
                assert value.device == parameter.device

    # the two runs go on identically (from the same random state, for dropout)
    torch.manual_seed(5)
    train_steps(run, 2)
    torch.manual_seed(5)
    train_steps(resumed, 2)
    for name, tensor in run.bundle.model.state_dict().items():
        torch.testing.assert_close(resumed.bundle.model.state_dict()[name], tensor, msg=name)


def test_a_checkpoint_from_before_a_progress_field_existed_loads_with_its_default(tmp_path):
    import json

    from mtl.train.state import read_progress

    (tmp_path / "progress.json").write_text(json.dumps({"state": {"epoch": 2, "step": 40}}))
    progress = read_progress(tmp_path)
    assert (progress.epoch, progress.step, progress.placements, progress.devices) == (2, 40, [], [])
    with pytest.raises(TypeError):
        (tmp_path / "progress.json").write_text(json.dumps({"state": {"no_such_field": 1}}))
        read_progress(tmp_path)


def test_the_reported_device_says_where_and_in_what_arithmetic_rank_0_trained(monkeypatch):
    """What jobs.train prints and metrics.json keeps; the real H200 string is in
    docs/benchmarks.md (All the data, on a GPU)."""
    from mtl.train.device import device_description

    assert device_description(torch.device("cpu"), "auto") == "cpu, float32"
    assert device_description(torch.device("cpu"), "bf16") == "cpu, bf16 autocast"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert device_description(torch.device("cuda:0"), "auto") == "cuda:0 (NVIDIA H200), bf16 autocast"
    assert device_description(torch.device("cuda:0"), "no") == "cuda:0 (NVIDIA H200), float32"
