"""Stage-2 losses: distribution matching (DMD), the critic's flow matching, trajectory regression.

DMD (Yin et al. 2024, as used by Self-Forcing): re-noise a generated video x to a random sigma,
x_t = (1 - sigma) x + sigma eps, and compare two x0-predictions there, each x0 = x_t - sigma v:
the real score (frozen S2DiT-KD, bidirectional, d = 0: it learned the teacher's CFG velocity)
and the fake score (a critic that tracks the generator's own distribution). The KL gradient
with respect to x is proportional to x0_fake - x0_real; it is normalised per sample by the
mean |x - x0_real| (DMD's normaliser) and applied through the surrogate
0.5 |x - sg(x - g)|^2, whose gradient is exactly g / numel. When the critic equals the real
score the gradient is exactly zero.

The critic learns the generator's distribution by flow matching on detached samples:
|critic(x_t, sigma, 0) - (eps - x)|^2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cache_schema import flow


@dataclass
class Renoise:
    """Per-row noise levels and noises of one re-noising (keyed per sample, see batch.py)."""

    sigma: torch.Tensor  # (B,)
    eps: torch.Tensor  # (B, C, F, H, W)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return flow.noisy_state(x, self.eps, self.sigma.view(-1, 1, 1, 1, 1))


def _x0(model, x_t, noise: Renoise, text, mask) -> torch.Tensor:
    v = model(x_t, noise.sigma, torch.zeros_like(noise.sigma), text, mask)  # d = 0, bidirectional
    return flow.x0_from_velocity(x_t, noise.sigma.view(-1, 1, 1, 1, 1), v)


def dmd_loss(x: torch.Tensor, real, critic, text: torch.Tensor, mask: torch.Tensor,
             noise: Renoise, batch=None) -> tuple[torch.Tensor, dict[str, float]]:
    """x: generated (B, C, F, H, W) with a gradient. ``real``: a RealScore (real_score.py)
    called with ``batch``, or a model (d = 0, bidirectional). Returns (surrogate loss, metrics)."""
    with torch.no_grad():
        x_t = noise.apply(x.detach())
        if isinstance(real, torch.nn.Module):
            x0_real = _x0(real, x_t, noise, text, mask)
        else:
            v_real = real(x_t, noise.sigma, batch)
            x0_real = flow.x0_from_velocity(x_t, noise.sigma.view(-1, 1, 1, 1, 1), v_real)
        x0_fake = _x0(critic, x_t, noise, text, mask)
        scale = (x.detach() - x0_real).abs().mean(dim=(1, 2, 3, 4), keepdim=True).clamp(min=1e-6)
        grad = torch.nan_to_num((x0_fake - x0_real) / scale)  # (B, C, F, H, W)
    loss = 0.5 * (x - (x.detach() - grad)).pow(2).mean()
    return loss, {"dmd_grad_rms": float(grad.pow(2).mean().sqrt())}


def critic_loss(critic, x: torch.Tensor, text: torch.Tensor, mask: torch.Tensor,
                noise: Renoise) -> torch.Tensor:
    """Flow matching of the critic on generated samples x (detached here)."""
    x = x.detach()
    v = critic(noise.apply(x), noise.sigma, torch.zeros_like(noise.sigma), text, mask)
    return (v - flow.velocity_target(x, noise.eps)).pow(2).mean()


def regression_loss(x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """The rollout from a trajectory's cached noise against that trajectory's cached x0."""
    return (x - x0).pow(2).mean()
