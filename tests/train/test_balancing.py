"""Gradient balancing (PCGrad, GradNorm), the all-task step, cyclical schedules and head-only steps:
each against a small example worked out by hand."""

import numpy as np
import pytest
import torch

from mtl.config import TrainConfig, validate_config
from mtl.data.mixing import TaskMixer
from mtl.errors import ConfigError
from mtl.train.gradients import average_gradients, gradient_norm, pcgrad, pcgrad_backward
from mtl.train.objective import TrainingModule
from mtl.train.optim import build_scheduler, cyclical_factor
from mtl.train.weighting import LossWeighting


def test_pcgrad_projects_conflicting_gradients_off_each_other():
    # g1 . g2 = -1 < 0: g1 - (-1 / |g2|^2) g2 = (0.5, 0.5) and g2 - (-1 / |g1|^2) g1 = (0, 1)
    first, second = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    combined = pcgrad([first, second], np.random.default_rng(0))
    torch.testing.assert_close(combined, torch.tensor([0.5, 1.5]))
    # the projected gradient no longer conflicts with the other task's
    assert torch.dot(torch.tensor([0.5, 0.5]), second) == 0


def test_pcgrad_leaves_agreeing_gradients_as_they_are():
    first, second = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.1])
    torch.testing.assert_close(pcgrad([first, second], np.random.default_rng(0)), first + second)


def test_pcgrad_backward_projects_the_shared_part_and_keeps_each_head_own():
    shared = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    head_a, head_b = torch.nn.Parameter(torch.tensor(2.0)), torch.nn.Parameter(torch.tensor(3.0))
    # d/d shared: task a (1, 0) * 2 = (2, 0); task b (-1, 1) * 3 = (-3, 3): they conflict (-6)
    objectives = {"a": head_a * shared[0], "b": head_b * (shared[1] - shared[0])}
    pcgrad_backward(objectives, [shared], [head_a, head_b], np.random.default_rng(0), scale=0.5)
    a, b = torch.tensor([2.0, 0.0]), torch.tensor([-3.0, 3.0])
    projected_a = a - torch.dot(a, b) / torch.dot(b, b) * b
    projected_b = b - torch.dot(b, a) / torch.dot(a, a) * a
    torch.testing.assert_close(shared.grad, 0.5 * (projected_a + projected_b))
    # each head's gradient is its own task's: d(a)/d head_a = shared[0] = 1, d(b)/d head_b = 0
    assert head_a.grad.item() == 0.5 and head_b.grad.item() == 0.0


def test_gradnorm_moves_weight_from_the_task_with_the_larger_faster_gradient():
    weighting = LossWeighting(strategy="gradnorm", tasks=["a", "b"], gradnorm_alpha=1.0)
    weighting.start_gradnorm({"a": 1.0, "b": 1.0})
    # weighted norms (2, 1), mean 1.5; loss ratios (0.5, 0.9) over their mean 0.7;
    # targets 1.5 * (0.714, 1.286) = (1.07, 1.93): a is above its target, b below
    gradient = weighting.gradnorm_gradient({"a": 0.5, "b": 0.9}, {"a": 2.0, "b": 1.0})
    torch.testing.assert_close(gradient, torch.tensor([2.0, -1.0]))
    # the weights never get a gradient from the task losses themselves
    weighting("a", torch.tensor(3.0, requires_grad=True)).backward()
    assert weighting.task_weights.grad is None


def test_gradnorm_weights_stay_positive_and_sum_to_the_task_count():
    weighting = LossWeighting(strategy="gradnorm", tasks=["a", "b", "c"])
    with torch.no_grad():
        weighting.task_weights.copy_(torch.tensor([4.0, -1.0, 2.0]))
    weighting.renormalize()
    weights = weighting.task_weights.detach()
    assert (weights > 0).all() and weights.sum().item() == pytest.approx(3.0)
    assert weights[0] / weights[2] == pytest.approx(2.0)


def test_gradnorm_state_round_trips_and_needs_its_first_losses():
    weighting = LossWeighting(strategy="gradnorm", tasks=["a", "b"])
    with pytest.raises(RuntimeError, match="first losses"):
        weighting.gradnorm_gradient({"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 1.0})
    weighting.start_gradnorm({"a": 2.0, "b": 0.5})
    weighting.start_gradnorm({"a": 9.0, "b": 9.0})  # only the first losses count
    restored = LossWeighting(strategy="gradnorm", tasks=["a", "b"])
    restored.load_state_dict(weighting.state_dict())
    torch.testing.assert_close(restored.initial_losses, torch.tensor([2.0, 0.5]))


def test_gradient_norm_of_a_loss_on_a_layer():
    weight = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    unused = torch.nn.Parameter(torch.tensor(1.0))
    assert gradient_norm((weight * weight).sum() / 2, [weight, unused]) == pytest.approx(5.0)
    assert gradient_norm(unused * 2, [weight]) == 0.0


def test_average_gradients_is_nothing_to_do_on_one_worker():
    parameter = torch.nn.Parameter(torch.ones(2))
    parameter.grad = torch.tensor([1.0, 2.0])
    average_gradients([parameter], world_size=1)
    torch.testing.assert_close(parameter.grad, torch.tensor([1.0, 2.0]))


def test_all_tasks_mixing_takes_every_task_each_step_for_the_largest_task_batches():
    mixer = TaskMixer(batch_counts={"big": 5, "small": 2}, strategy="all_tasks")
    assert mixer.steps_per_epoch == 5
    assert mixer.steps(0) == [("big", "small")] * 5
    assert TaskMixer(batch_counts={"big": 5, "small": 2}).steps(0)[0] in (("big",), ("small",))


def test_gradient_balancing_needs_all_tasks_mixing():
    with pytest.raises(ValueError, match="set mixing: all_tasks"):
        TrainConfig(loss_weighting="pcgrad")
    assert TrainConfig(loss_weighting="gradnorm", mixing="all_tasks").loss_weighting == "gradnorm"


@pytest.mark.parametrize(("step", "factor"), [(0, 0.0), (5, 0.5), (10, 1.0), (15, 0.55), (20, 0.1),
                                               (25, 0.55), (30, 1.0), (35, 0.55), (40, 0.1)])
def test_triangular_falls_and_climbs_and_ends_at_the_floor(step, factor):
    # warm-up 10 steps, then 2 cycles over 30 steps: fall, climb, fall (3 segments of 10)
    assert cyclical_factor(step, shape="triangular", warmup=10, total=40, cycles=2,
                           min_ratio=0.1) == pytest.approx(factor)


@pytest.mark.parametrize(("step", "factor"), [(10, 1.0), (20, 0.55), (29, 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 0.95))),
                                               (30, 1.0), (40, 0.55), (50, 0.1)])
def test_cosine_restarts_decay_then_restart_at_the_peak(step, factor):
    assert cyclical_factor(step, shape="cosine_restarts", warmup=10, total=50, cycles=2,
                           min_ratio=0.1) == pytest.approx(factor)


def test_cyclical_schedule_scales_every_group_and_survives_a_checkpoint():
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1e-4},
              {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1e-3}]
    settings = TrainConfig(schedule="triangular", cycles=1, cycle_min_ratio=0.0, warmup_steps=0)
    optimizer = torch.optim.AdamW(groups)
    scheduler = build_scheduler(optimizer, settings, total_steps=10)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([5e-5, 5e-4])
    again = build_scheduler(torch.optim.AdamW(groups), settings, total_steps=10)
    again.load_state_dict(scheduler.state_dict())
    assert again.last_epoch == 5


def test_a_head_only_task_trains_its_head_and_not_the_encoder(tiny_bundle):
    module = TrainingModule(tiny_bundle.model, LossWeighting(strategy="static", tasks=["sentiment", "ner"]))
    inputs = tiny_bundle.featurizer.encode(texts=["good", "bad"]).inputs
    batches = {"sentiment": {**inputs, "labels": torch.tensor([1, 0])}}
    _, objectives, _ = module(batches, head_only=frozenset({"sentiment"}))
    objectives["sentiment"].backward()
    model = tiny_bundle.model
    assert all(parameter.grad is None for parameter in model.encoder.parameters())
    assert model.heads["sentiment"].classifier.weight.grad.abs().sum() > 0
    model.zero_grad()
    _, objectives, _ = module({"sentiment": {**inputs, "labels": torch.tensor([1, 0])}})
    objectives["sentiment"].backward()
    assert any(parameter.grad is not None and parameter.grad.abs().sum() > 0
               for parameter in model.encoder.parameters())


def test_head_only_steps_and_augmentation_are_checked_against_the_task_kind():
    task = {"name": "pairs", "kind": "similarity", "train": {"path": "p.jsonl"}, "head_only_steps": 10}
    with pytest.raises(ConfigError, match="tasks.0: .*head_only_steps: a similarity task has no head"):
        validate_config({"tasks": [task]})
    tagging = {"name": "ner", "kind": "tagging", "train": {"path": "t.conll"}, "augment": {"deletion": 0.1}}
    with pytest.raises(ConfigError, match=r"tasks.0: .*augment.deletion: not for a tagging task"):
        validate_config({"tasks": [tagging]})
    nothing = {**tagging, "augment": {"rows": 0.5}}
    with pytest.raises(ConfigError, match="augment: no operation has a rate above 0"):
        validate_config({"tasks": [nothing]})
