import pytest
import torch

from mtl.config import GradualUnfreezing, TrainConfig
from mtl.errors import ConfigError
from mtl.model.freezing import encoder_layers
from mtl.train.optim import FreezingPlan, build_optimizer, build_scheduler, encoder_depth, parameter_groups
from mtl.train.weighting import LossWeighting


def groups_by_parameter(groups):
    return {id(parameter): group for group in groups for parameter in group["params"]}


def test_no_weight_decay_on_biases_and_layer_norms(tiny_bundle):
    model = tiny_bundle.model
    config = TrainConfig(weight_decay=0.05)
    by_parameter = groups_by_parameter(parameter_groups(model, torch.nn.Module(), config, {}))
    for name, parameter in model.named_parameters():
        decay = by_parameter[id(parameter)]["weight_decay"]
        if name.endswith("bias") or "norm" in name.lower():
            assert decay == 0.0, name
        else:
            assert decay == 0.05, name


def test_layer_wise_decay_and_head_learning_rates(tiny_bundle):
    model = tiny_bundle.model
    config = TrainConfig(learning_rate=1e-4, head_learning_rate=1e-3, layer_decay=0.5)
    weighting = LossWeighting(strategy="uncertainty", tasks=["sentiment", "ner"])
    by_parameter = groups_by_parameter(parameter_groups(model, weighting, config, {"ner": 3e-3}))
    lr = lambda parameter: by_parameter[id(parameter)]["lr"]  # noqa: E731
    layers = encoder_layers(model)
    assert lr(next(layers[1].parameters())) == pytest.approx(1e-4)
    assert lr(next(layers[0].parameters())) == pytest.approx(5e-5)
    assert lr(model.encoder.transformer.embeddings.word_embeddings.weight) == pytest.approx(2.5e-5)
    assert lr(model.heads["sentiment"].classifier.weight) == 1e-3
    assert lr(model.heads["ner"].classifier.weight) == 3e-3
    assert lr(weighting.log_variances) == 1e-3
    every = {id(p) for p in list(model.parameters()) + list(weighting.parameters())}
    assert set(by_parameter) == every


def test_encoder_depth_reads_layer_numbers():
    assert encoder_depth("transformer.embeddings.word_embeddings.weight", 6) == 0
    assert encoder_depth("transformer.encoder.layer.3.output.dense.weight", 6) == 4
    assert encoder_depth("transformer.pooler.dense.weight", 6) == 6


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_warmup_then_decay(schedule):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([{"params": [parameter], "lr": 1.0, "weight_decay": 0.0}])
    scheduler = build_scheduler(optimizer, TrainConfig(schedule=schedule, warmup_steps=10), total_steps=110)
    rates = []
    for _ in range(110):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == 0.0 and rates[5] == pytest.approx(0.5) and rates[10] == pytest.approx(1.0)
    assert rates[60] == pytest.approx(0.5, abs=0.01)  # halfway through the decay, for both shapes
    assert rates[-1] < 0.02
    assert all(later <= earlier for earlier, later in zip(rates[10:], rates[11:]))


def test_warmup_ratio_is_of_all_steps():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([{"params": [parameter], "lr": 1.0, "weight_decay": 0.0}])
    scheduler = build_scheduler(optimizer, TrainConfig(warmup_ratio=0.25), total_steps=40)
    rates = []
    for _ in range(40):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # a quarter of 40 steps is 10 warm-up steps: half the peak at step 5, the peak at step 10
    assert rates[0] == 0.0 and rates[5] == pytest.approx(0.5) and rates[10] == pytest.approx(1.0)
    assert rates[11] < rates[10]


def test_static_freezing(tiny_bundle):
    model = tiny_bundle.model
    FreezingPlan(TrainConfig(freeze="embeddings", freeze_layers=1)).apply_static(model)
    layers = encoder_layers(model)
    assert not any(p.requires_grad for p in model.encoder.transformer.embeddings.parameters())
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[1].parameters())


def test_gradual_unfreezing_releases_top_layers_first(tiny_bundle):
    model = tiny_bundle.model
    plan = FreezingPlan(TrainConfig(gradual_unfreezing=GradualUnfreezing(every=10, unit="steps")))
    layers = encoder_layers(model)
    embeddings = set(map(id, model.encoder.transformer.embeddings.parameters()))
    frozen = lambda step: set(map(id, plan.still_frozen(model, step, 0)))  # noqa: E731
    assert frozen(0) == embeddings | set(map(id, layers.parameters()))
    assert frozen(10) == embeddings | set(map(id, layers[0].parameters()))
    assert frozen(20) == embeddings
    assert frozen(30) == set()
    assert FreezingPlan(TrainConfig()).still_frozen(model, 0, 0) == []


def test_gradual_unfreezing_of_a_frozen_encoder_is_a_config_error():
    with pytest.raises(ConfigError, match="train.gradual_unfreezing"):
        FreezingPlan(TrainConfig(freeze="encoder", gradual_unfreezing=GradualUnfreezing(every=1)))
