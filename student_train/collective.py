"""Gradient averaging over the ranks of a Ray Train worker group, for trainers that step
modules a DDP wrapper cannot proxy (stage 2 rolls out through ``forward_chunk``)."""

from __future__ import annotations

import torch


def average_gradients(module: torch.nn.Module, world_size: int) -> None:
    """Mean of every parameter's gradient over the ranks of the default process group, in one
    flat all-reduce (a parameter without a gradient on this rank counts as zero)."""
    if world_size <= 1:
        return
    import torch.distributed as dist

    params = [p for p in module.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p)
        offset += n
