"""Mixed precision for both training stages: autocast where asked, fp32 otherwise.

Weights, optimiser state and EMA stay fp32; only the forward (and its backward) runs in the
autocast dtype. bfloat16 needs no loss scaling. float16 does: a ``GradScaler`` multiplies the
loss so small gradients survive in fp16, skips a step whose gradients overflowed and adapts
the scale; its state is saved in every checkpoint so a resumed run skips the same steps.

On CPU the default is fp32: bf16/fp16 matmuls are far slower than fp32 there (PLATFORM-NOTES),
so autocast on CPU is allowed (it is how the tests exercise this code) but warned about.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable
from typing import Any

import torch

AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def check_autocast_dtype(name: str | None) -> None:
    if name is not None and name not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast_dtype {name!r} is not supported: use one of "
                         f"{sorted(AUTOCAST_DTYPES)} or leave it unset for fp32")


class Precision:
    """``with precision.autocast(): loss = ...``, then ``precision.backward(loss)`` and
    ``precision.clip_and_step(optimizer, params, max_norm)``."""

    def __init__(self, device: torch.device, autocast_dtype: str | None, *,
                 init_scale: float = 2.0 ** 16):
        check_autocast_dtype(autocast_dtype)
        self.device_type = device.type
        self.dtype = AUTOCAST_DTYPES.get(autocast_dtype) if autocast_dtype else None
        if self.dtype is not None and self.device_type == "cpu":
            warnings.warn(f"autocast to {autocast_dtype} on CPU is much slower than fp32 here; "
                          "leave autocast_dtype unset on CPU", stacklevel=2)
        self.scaler = (torch.amp.GradScaler(self.device_type, init_scale=init_scale)
                       if self.dtype is torch.float16 else None)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def clip_and_step(self, optimizer: torch.optim.Optimizer, params: Iterable[torch.nn.Parameter],
                      max_norm: float) -> float:
        """Unscale (fp16), clip, step (skipped by the scaler on overflow); returns the grad norm.

        Gradients averaged across ranks before this call are identical on every rank, so every
        rank takes the same skip decision."""
        if self.scaler:
            self.scaler.unscale_(optimizer)
        norm = float(torch.nn.utils.clip_grad_norm_(list(params), max_norm))
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        return norm

    @property
    def loss_scale(self) -> float | None:
        return float(self.scaler.get_scale()) if self.scaler else None

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler else {}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)
