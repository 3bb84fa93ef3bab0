"""The analytic teacher's autoregressive teacher and its causal ODE pairs (Causal Forcing, arXiv
2602.02214): what stage 2's causal phase learns its jumps from when the cache holds them.

Under the mixture p(x) = sum_k w_k N(x; mu_k, s^2 I) the frames are independent given the mode,
so the distribution of a chunk X given the clean past frames P is the same mixture restricted to
X's frames, with mode weights w_k N(P; mu_k[P], s^2 I) (normalised; an empty past leaves them
equal). That holds for the conditional mixture (the prompt's class) and the unconditional one
(every class) alike, so the autoregressive teacher's velocity is ``exact_velocity`` on the
chunk's frames with those weights, guided as the teacher guides (v_u + g (v_c - v_u), the
step's guidance), and its ODE is the teacher's own solver on its own sigma grid.

``causal_trajectories`` solves it chunk by chunk: chunk c from the sample's own initial noise on
chunk c's frames (keyed by sample id, as the cached ``noise``), given the sample's own clean x0 of
chunks < c as the cache holds it (the context stage 2 commits). Each chunk's past evidence is
log N(P; mu_k[P], s^2 I) up to a constant per sample, (P . mu_k - |mu_k[P]|^2 / 2) / s^2, summed
chunk by chunk. With one chunk covering the clip (no past) the ODE is the teacher's trajectory,
bit for bit (tests/teacher_jobs/test_causal_pairs.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from cache_schema import flow

if TYPE_CHECKING:
    from .analytic import AnalyticTeacher


def chunk_modes(means: np.ndarray, latent_shape: tuple[int, ...], frames: slice) -> np.ndarray:
    """(..., K, C * len(frames) * H * W): the modes ``means`` (..., K, C*F*H*W) on ``frames``."""
    lead = means.shape[:-1]
    grid = means.reshape(*lead, *latent_shape)  # (..., K, C, F, H, W)
    part = grid[..., frames, :, :]
    return np.ascontiguousarray(part).reshape(*lead, -1)


def past_evidence(past: np.ndarray, modes: np.ndarray, s: float) -> np.ndarray:
    """(B, K) log N(past; mu_k, s^2 I) up to a constant per sample.

    past: (B, D) clean frames; modes: (B, K, D) per sample or (K, D) shared.
    """
    if modes.ndim == 2:
        dot = past @ modes.T  # (B, K)
        norms = np.einsum("kd,kd->k", modes, modes)[None]
    else:
        dot = np.einsum("bd,bkd->bk", past, modes)
        norms = np.einsum("bkd,bkd->bk", modes, modes)
    return (dot - 0.5 * norms) / (s * s)


def _like(v: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    """A velocity (B, Dim) fp64 as the teacher returns it: x's shape, device and dtype."""
    return torch.from_numpy(v.reshape(x.shape)).to(x.device, x.dtype)


@torch.no_grad()
def causal_trajectories(teacher: AnalyticTeacher, noise: torch.Tensor, x0: np.ndarray,
                        prompts: list[str], chunk_frames: int, keep_steps: list[int]
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(states (B, S, C, F, H, W) before each kept step, end states (B, C, F, H, W)), float32:
    frames of chunk c hold chunk c's autoregressive-teacher ODE, from ``noise`` (B, C, F, H, W)
    on its frames, given ``x0`` (B, C, F, H, W, the clean clips as cached) on the frames before.
    """
    if chunk_frames < 1:
        raise ValueError(f"causal pairs need chunk_frames >= 1, got {chunk_frames}")
    shape = teacher.latent_shape
    b, frames, s = noise.shape[0], shape[1], teacher.config.s
    position = {step: k for k, step in enumerate(keep_steps)}
    states = np.zeros((b, len(keep_steps), *shape), np.float32)
    end = np.zeros((b, *shape), np.float32)
    classes = np.array([teacher.class_of(p) for p in prompts])
    cond_all = teacher.means[classes]  # (B, K, Dim)
    uncond_all = teacher.means.reshape(-1, teacher.means.shape[-1])  # (M, Dim): every class
    clean = np.asarray(x0, dtype=np.float64)
    log_c = np.zeros(cond_all.shape[:2])  # (B, K) past evidence so far
    log_u = np.zeros((b, uncond_all.shape[0]))  # (B, M)
    for start in range(0, frames, chunk_frames):
        part = slice(start, min(start + chunk_frames, frames))
        cond = chunk_modes(cond_all, shape, part)  # (B, K, Dc)
        uncond = chunk_modes(uncond_all, shape, part)  # (M, Dc)
        uncond_b = np.broadcast_to(uncond, (b, *uncond.shape))
        # no past (the first chunk): equal weights, exactly the teacher's own velocity
        prior_c, prior_u = (None, None) if start == 0 else (log_c, log_u)
        x = noise[:, :, part].to(teacher.device, teacher.dtype)
        teacher.reset_solver()
        for i in range(teacher.num_steps):
            sigma = float(teacher.sigmas()[i])
            flat = x.detach().cpu().double().numpy().reshape(b, -1)
            v_c = _like(teacher.exact_velocity(flat, sigma, cond, prior_c), x)
            v_u = _like(teacher.exact_velocity(flat, sigma, uncond_b, prior_u), x)
            k = position.get(i)
            if k is not None:
                states[:, k, :, part] = x.float().cpu().numpy()
            v = flow.classifier_free_guidance(v_u, v_c, teacher.guidance_at(i))
            x = teacher.solver_step(x, v, i)
        end[:, :, part] = x.float().cpu().numpy()
        # the clean chunk becomes evidence for the chunks after it
        seen = clean[:, :, part].reshape(b, -1)
        log_c = log_c + past_evidence(seen, cond, s)
        log_u = log_u + past_evidence(seen, uncond, s)
    return states, end


__all__ = ["causal_trajectories", "chunk_modes", "past_evidence"]
