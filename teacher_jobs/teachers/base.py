"""The Teacher interface: what the trajectory recorder needs from any teacher.

A teacher encodes prompts, predicts conditional and unconditional velocities at (x, sigma)
with the right expert, owns its sampling schedule and solver, and fingerprints everything that
changes its output. Tensors are torch, [B, C, F, H, W]; compute dtype and device are config.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cache_schema import CacheLayout, flow

CODE_VERSION = "teacher-1"


@dataclass
class EncodedText:
    emb: torch.Tensor  # (B, Lmax, D)
    lengths: list[int]  # real token count per prompt
    prompts: list[str] | None = None  # the normalised prompts (analytic teachers read them)

    @property
    def mask(self) -> torch.Tensor:  # (B, Lmax) bool
        steps = torch.arange(self.emb.shape[1], device=self.emb.device)
        return steps[None, :] < torch.tensor(self.lengths, device=self.emb.device)[:, None]


class Teacher(abc.ABC):
    name: str
    latent_shape: tuple[int, int, int, int]  # (C, F, H, W)
    text_dim: int
    max_text_len: int
    num_steps: int
    device: torch.device
    dtype: torch.dtype  # compute dtype (fp32 on CPU)

    @abc.abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes this teacher's output (not job-level settings)."""

    @abc.abstractmethod
    def count_tokens(self, prompt: str) -> int:
        """Tokens the text encoder sees for a normalised prompt (for length validation)."""

    @abc.abstractmethod
    def encode_prompts(self, prompts: list[str]) -> EncodedText:
        ...

    @abc.abstractmethod
    def velocity(self, x: torch.Tensor, step: int, text: EncodedText, neg_text: EncodedText
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(v_cond, v_uncond) at state x of solver step ``step``, by the step's expert."""

    @abc.abstractmethod
    def sigmas(self) -> np.ndarray:
        """num_steps + 1 sigmas from ~1 to 0 (after shift)."""

    def timesteps(self) -> np.ndarray:
        return flow.timestep_from_sigma(self.sigmas()[:-1]).astype(np.float32)

    def guidance_at(self, step: int) -> float:
        return float(self.guidance[self.expert_at(step)])

    def expert_at(self, step: int) -> int:
        return 0

    guidance: tuple[float, ...] = (1.0,)
    # Latent frames per chunk of the causal ODE pairs the recorder writes (0: none); a teacher
    # that sets it implements ``causal_trajectories``.
    causal_chunk_frames: int = 0

    def causal_trajectories(self, noise: torch.Tensor, x0: np.ndarray, text: EncodedText,
                            neg_text: EncodedText, keep_steps: list[int]
                            ) -> tuple[np.ndarray, np.ndarray]:
        """Causal ODE pairs (cache_schema's ``causal_states``, ``causal_x0``): for each chunk of
        ``causal_chunk_frames`` frames, the autoregressive teacher's ODE from that chunk of
        ``noise`` (B, C, F, H, W) given the clean ``x0`` (B, C, F, H, W, as cached) of the
        chunks before it; (states (B, S, C, F, H, W) at ``keep_steps``, end states (B, C, F,
        H, W)), float32."""
        raise NotImplementedError(f"the {self.name} teacher has no autoregressive teacher: it "
                                  "cannot write causal ODE pairs")

    def reset_solver(self) -> None:
        """Called before each batch; multistep solvers clear their history."""

    def solver_step(self, x: torch.Tensor, v: torch.Tensor, step: int) -> torch.Tensor:
        """x at step+1 from the guided velocity at ``step`` (Euler unless overridden)."""
        sig = self.sigmas()
        return flow.euler_step(x, float(sig[step]), float(sig[step + 1]), v)

    def layout(self, keep_steps: tuple[int, ...], half_dtype: str = "float16") -> CacheLayout:
        return CacheLayout(latent_shape=tuple(self.latent_shape), num_steps=self.num_steps,
                           keep_steps=tuple(keep_steps), text_dim=self.text_dim,
                           max_text_len=self.max_text_len, half_dtype=half_dtype)
