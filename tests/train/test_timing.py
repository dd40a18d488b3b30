"""The all-reduce clock: DDP's gradients pass through it unchanged, and it counts their time."""

import socket

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mtl.train.timing import AllReduceClock


@pytest.fixture
def process_group():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_the_clock_passes_gradients_through_and_times_the_all_reduce(process_group):
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))
    wrapped = DistributedDataParallel(nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3)),
                                      bucket_cap_mb=0.01)  # several buckets, some in flight together
    wrapped.module.load_state_dict(plain.state_dict())
    clock = AllReduceClock.attach(wrapped)
    inputs = torch.randn(8, 64)
    plain(inputs).square().sum().backward()
    wrapped(inputs).square().sum().backward()
    for mine, theirs in zip(wrapped.module.parameters(), plain.parameters()):
        assert torch.allclose(mine.grad, theirs.grad)
    assert clock.take() > 0
    assert clock.take() == 0  # taken: counted once


def test_a_single_worker_model_gets_no_clock():
    assert AllReduceClock.attach(nn.Linear(2, 2)) is None
