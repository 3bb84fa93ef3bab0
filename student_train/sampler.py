"""Sampling the student: few-step (d = the jump) or full-step (d = 0) Euler over a schedule."""

from __future__ import annotations

import torch

from cache_schema import flow


@torch.no_grad()
def sample(model, noise: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
           sigmas: list[float], *, use_step_size: bool = True, causal: bool = False) -> torch.Tensor:
    """Integrate from ``noise`` at sigmas[0] to sigmas[-1] (usually 0).

    use_step_size: condition on d = sigma_k - sigma_{k+1} (few-step, S2DiT-KD's jumps);
    False gives the instantaneous velocity (d = 0), for sampling on the teacher's grid.
    """
    x = noise
    b = x.shape[0]
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        sig = torch.full((b,), s, device=x.device, dtype=x.dtype)
        d = torch.full((b,), (s - s_next) if use_step_size else 0.0, device=x.device, dtype=x.dtype)
        v = model(x, sig, d, text, text_mask, causal=causal)
        x = flow.euler_step(x, s, s_next, v)
    return x
