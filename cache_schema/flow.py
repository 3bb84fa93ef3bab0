"""Flow-matching conventions shared by teachers and student (DESIGN 4.1).

x_sigma = (1 - sigma) x0 + sigma eps, sigma in [0, 1] (1 = pure noise), timestep = 1000 sigma,
velocity v = eps - x0. Every function uses arithmetic operators only, so it works unchanged on
numpy arrays, torch tensors and Python floats.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

T = TypeVar("T")

NUM_TRAIN_TIMESTEPS = 1000


def timestep_from_sigma(sigma: T) -> T:
    return sigma * NUM_TRAIN_TIMESTEPS


def shift_sigma(sigma: T, shift: float) -> T:
    """Time shift of flow-matching samplers: pushes the schedule toward high noise."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def noisy_state(x0: T, eps: T, sigma) -> T:
    """x_sigma on the straight path from data x0 (sigma 0) to noise eps (sigma 1)."""
    return (1 - sigma) * x0 + sigma * eps


def velocity_target(x0: T, eps: T) -> T:
    return eps - x0


def x0_from_velocity(x: T, sigma, v: T) -> T:
    return x - sigma * v


def euler_step(x: T, sigma, sigma_next, v: T) -> T:
    """One Euler step of dx/dsigma = v (sigma_next < sigma when denoising)."""
    return x + (sigma_next - sigma) * v


def classifier_free_guidance(v_uncond: T, v_cond: T, guidance) -> T:
    return v_uncond + guidance * (v_cond - v_uncond)


def average_velocity(x_i: T, sigma_i, x_j: T, sigma_j) -> T:
    """Exact mean velocity of the jump from state i to state j (sigma_i > sigma_j).

    The step-distillation target of DESIGN 6: a student with step size d = sigma_i - sigma_j
    that predicts this velocity lands exactly on x_j with one Euler step.
    """
    return (x_i - x_j) / (sigma_i - sigma_j)


def euler_sigmas(num_steps: int, shift: float = 1.0) -> np.ndarray:
    """Shifted uniform schedule of num_steps + 1 sigmas from 1 down to 0 (float32)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    base = np.linspace(1.0, 0.0, num_steps + 1, dtype=np.float64)
    return shift_sigma(base, shift).astype(np.float32)
