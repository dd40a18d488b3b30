"""Where a worker trains: mixed precision by device, its description for the job's report, and its memory."""

from __future__ import annotations

import contextlib
import resource
from pathlib import Path

import torch


def uses_bf16(mode: str, device: torch.device) -> bool:
    """bf16 where asked, or on 'auto' where the GPU supports it; CPU stays in float32."""
    bf16_gpu = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return mode == "bf16" or (mode == "auto" and bf16_gpu)


def autocast(mode: str, device: torch.device):
    if uses_bf16(mode, device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def device_description(device: torch.device, mixed_precision: str) -> str:
    """What this worker trains on, for the job's report: a GPU run that fell back to the CPU shows."""
    name = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
    return f"{name}, {'bf16 autocast' if uses_bf16(mixed_precision, device) else 'float32'}"


def peak_rss() -> int:
    """This process's largest resident memory so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def private_rss() -> int:
    """This process's resident memory now, less shared memory (the pages of Ray's object store that
    it has read blocks from, which belong to the node's store), in bytes; 0 where /proc is absent."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    sizes = dict(line.split(":", 1) for line in status.splitlines() if line.startswith(("RssAnon", "RssFile")))
    return sum(int(size.split()[0]) for size in sizes.values()) * 1024
