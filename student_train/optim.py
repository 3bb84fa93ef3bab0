"""One optimiser step, the learning rate and the EMA, as every training stage takes them."""

from __future__ import annotations

import torch

from .collective import average_gradients
from .precision import Precision


def adamw(module: torch.nn.Module, lr: float, betas: tuple[float, float],
          weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the module's parameters. ``foreach``: one multi-tensor op per update term
    instead of a Python loop over ~100 parameters (torch's default on CPU); the same bytes
    (tests/student_train/test_train_golden.py), fewer small ops (bench/bench_train_step.py)."""
    return torch.optim.AdamW(module.parameters(), lr=lr, betas=betas, weight_decay=weight_decay,
                             foreach=True)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def optimiser_step(optimizer: torch.optim.Optimizer, precision: Precision, loss: torch.Tensor,
                   module: torch.nn.Module, grad_clip: float, *, world_size: int = 1) -> float:
    """zero_grad -> backward -> mean gradient over ``world_size`` ranks (before unscaling: one
    skip decision; 1 where a DDP wrapper already averaged) -> clip -> step; the gradient norm."""
    optimizer.zero_grad(set_to_none=True)
    precision.backward(loss)
    average_gradients(module, world_size)
    return float(precision.clip_and_step(optimizer, module.parameters(), grad_clip))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)
