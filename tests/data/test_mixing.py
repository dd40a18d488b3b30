from collections import Counter

import pytest

from mtl.data.mixing import TaskMixer

COUNTS = {"big": 90, "small": 10}


def test_proportional_gives_each_task_its_own_batches_shuffled():
    mixer = TaskMixer(batch_counts=COUNTS, strategy="proportional", seed=1)
    schedule = mixer.schedule(0)
    assert Counter(schedule) == COUNTS
    assert schedule != sorted(schedule) and schedule != mixer.schedule(1)


def test_temperature_moves_steps_towards_small_tasks():
    t1 = TaskMixer(batch_counts=COUNTS, strategy="temperature", temperature=1.0).shares()
    t2 = TaskMixer(batch_counts=COUNTS, strategy="temperature", temperature=2.0).shares()
    t_large = TaskMixer(batch_counts=COUNTS, strategy="temperature", temperature=100.0).shares()
    assert t1 == COUNTS
    assert t2 == {"big": 75, "small": 25}  # 90**0.5 : 10**0.5 = 3 : 1
    assert abs(t_large["big"] - t_large["small"]) <= 4
    assert sum(t2.values()) == sum(t_large.values()) == 100


def test_round_robin_alternates_tasks():
    schedule = TaskMixer(batch_counts={"a": 3, "b": 1, "c": 2}, strategy="round_robin").schedule(0)
    assert schedule == ["a", "b", "c", "a", "b", "c"]


def test_schedule_is_the_same_for_every_worker_and_every_resume():
    make = lambda: TaskMixer(batch_counts=COUNTS, strategy="temperature", seed=7)  # noqa: E731
    assert make().schedule(3) == make().schedule(3)


def test_unknown_strategy_and_empty_task_are_rejected():
    with pytest.raises(ValueError, match="unknown mixing"):
        TaskMixer(batch_counts=COUNTS, strategy="random")
    with pytest.raises(ValueError, match="no training batches"):
        TaskMixer(batch_counts={"a": 0})
