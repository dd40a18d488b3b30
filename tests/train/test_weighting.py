import math

import pytest
import torch

from mtl.train.weighting import LossWeighting


def test_static_weights_scale_the_loss():
    weighting = LossWeighting(strategy="static", tasks=["a", "b"], static_weights={"a": 2.0})
    assert weighting("a", torch.tensor(3.0)).item() == 6.0
    assert weighting("b", torch.tensor(3.0)).item() == 3.0


def test_uncertainty_weighting_learns_to_down_weight_a_noisy_task():
    weighting = LossWeighting(strategy="uncertainty", tasks=["noisy", "clean"])
    optimizer = torch.optim.SGD(weighting.parameters(), lr=0.1)
    for _ in range(200):
        loss = weighting("noisy", torch.tensor(5.0)) + weighting("clean", torch.tensor(0.2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    weights = weighting.weights()
    assert weights["noisy"] == pytest.approx(1 / (2 * 5.0), rel=0.05)  # optimum: exp(-s) = 1 / (2 loss)
    assert weights["clean"] == pytest.approx(1 / (2 * 0.2), rel=0.05)


def test_dwa_favors_the_task_whose_loss_falls_slowest():
    weighting = LossWeighting(strategy="dwa", tasks=["slow", "fast"], dwa_temperature=2.0)
    weighting.end_epoch({"slow": 1.0, "fast": 1.0})
    assert weighting.weights() == {"slow": 1.0, "fast": 1.0}
    weighting.end_epoch({"slow": 0.9, "fast": 0.3})
    weights = weighting.weights()
    assert weights["slow"] > 1.0 > weights["fast"]
    assert sum(weights.values()) == pytest.approx(2.0)
    expected = 2 * math.exp(0.45) / (math.exp(0.45) + math.exp(0.15))
    assert weights["slow"] == pytest.approx(expected)
    assert weighting("fast", torch.tensor(1.0)).item() == pytest.approx(weights["fast"])


def test_dwa_history_round_trips_through_the_state_dict():
    weighting = LossWeighting(strategy="dwa", tasks=["a", "b"])
    weighting.end_epoch({"a": 1.0, "b": 2.0})
    weighting.end_epoch({"a": 0.5, "b": 1.9})
    restored = LossWeighting(strategy="dwa", tasks=["a", "b"])
    restored.load_state_dict(weighting.state_dict())
    assert restored.weights() == weighting.weights() != {"a": 1.0, "b": 1.0}
    restored.end_epoch({"a": 0.4, "b": 1.0})
    weighting.end_epoch({"a": 0.4, "b": 1.0})
    assert restored.weights() == weighting.weights()
