"""Faster float32 inference on CPU: linear layers through oneDNN with weights packed once.

PyTorch runs a float32 ``nn.Linear`` on CPU through MKL's GEMM. For the shapes of a small encoder
(a few hundred tokens by 384 or 1,536 features) oneDNN's kernel with the weight reordered once into
its blocked layout is faster, with the same results to 1e-6 (figures in docs/benchmarks.md).
This is what Intel's extension for PyTorch does at ``ipex.optimize``; PyTorch's own compiler uses
the same op (``torch.ops.mkldnn._linear_pointwise``) when it freezes a model for CPU.

The op is not public API, so packing checks itself: where the op is missing or answers differently
from ``nn.Linear``, the model is left as it was. Packing is for a model that only predicts: a
packed layer has no gradient and is not saved.
"""

from __future__ import annotations

import torch
from torch import nn

TOLERANCE = 1e-4


class PackedLinear(nn.Module):
    """``nn.Linear``'s forward, with the weight held in oneDNN's packed layout."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight, None)
        self.bias = None if linear.bias is None else linear.bias.detach().clone()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(features, self.packed_weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed for oneDNN"


def pack_linear_layers(model: nn.Module) -> int:
    """Swap every float32 ``nn.Linear`` of a CPU model for a ``PackedLinear``; returns how many.

    Nothing is swapped when the model is not on the CPU, not float32, or when oneDNN cannot run
    here (then the model keeps its ``nn.Linear`` layers and gives the same answers, only slower).
    """
    linears = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if type(child) is nn.Linear and child.weight.device.type == "cpu"
               and child.weight.dtype == torch.float32]
    if not linears or not _packing_works(linears[0][2]):
        return 0
    for parent, name, child in linears:
        setattr(parent, name, PackedLinear(child))
    return len(linears)


def _packing_works(linear: nn.Linear) -> bool:
    """Whether this PyTorch has the oneDNN ops and they agree with ``nn.Linear`` on a sample."""
    if not torch.backends.mkldnn.is_available():
        return False
    sample = torch.randn(2, 3, linear.in_features, generator=torch.Generator().manual_seed(0))
    try:
        with torch.inference_mode():
            packed = PackedLinear(linear)(sample)
            expected = linear(sample)
    except (AttributeError, RuntimeError):
        return False
    return packed.shape == expected.shape and torch.allclose(packed, expected, atol=TOLERANCE, rtol=TOLERANCE)
