"""The sampling side of a teacher: what sampling and reporting a student trained on its cache
need from the teacher that made that cache, rebuilt from the cache's fingerprint alone.

- ``text``: the encoder that made the cache's ``text_emb`` (prompts -> the student's input);
- ``renderer``: latents -> frames one can watch (chunk by chunk when the decoder can);
- ``oracle``: a teacher whose data distribution is known, which scores samples (None for a real
  teacher); an ``OracleSide`` also chooses the report's prompts and names the class a sample
  is nearest to.

A teacher kind returns its side from ``TeacherSettings.sampling_side`` (spec.py); callers ask
``open_sampling_side(fingerprint)`` (registry.py) and never test a teacher's name.
"""

from __future__ import annotations

import abc
from typing import Any, Protocol

import numpy as np
import torch

from .base import EncodedText, Teacher


class TextEncoder(Protocol):
    max_text_len: int

    def count_tokens(self, prompt: str) -> int: ...

    def encode_prompts(self, prompts: list[str]) -> EncodedText: ...


class Renderer(Protocol):
    """Latent chunks in (``push``, in frame order), uint8 frames (B, n, H, W, 3) out."""

    mode: str  # "chunk by chunk" or "whole clip"

    def push(self, latents: torch.Tensor) -> np.ndarray | None: ...

    def finish(self) -> np.ndarray | None: ...


class SamplingSide(abc.ABC):
    """One cache's teacher, as far as sampling and reporting a student go."""

    kind: str  # the registry key, as fingerprint["teacher"] carries it
    fps: float  # frame rate of the rendered video
    text: TextEncoder
    oracle: Any = None  # None: no known data distribution, no scores

    @abc.abstractmethod
    def renderer(self, height: int, width: int) -> Renderer:
        """A renderer for latents of ``height`` x ``width`` latent pixels."""

    def render(self, x0: np.ndarray) -> np.ndarray:
        """(N, C, F, H, W) latents -> (N, F', H', W', 3) uint8 frames, in one push."""
        renderer = self.renderer(x0.shape[-2], x0.shape[-1])
        parts = [renderer.push(torch.from_numpy(np.ascontiguousarray(x0, dtype=np.float32))),
                 renderer.finish()]
        return np.concatenate([p for p in parts if p is not None], 1)

    def scores(self, x0: np.ndarray, prompts: list[str]) -> dict[str, Any] | None:
        """The oracle's scores of samples of ``prompts``; None without an oracle."""
        return None if self.oracle is None else self.oracle.score(x0, prompts)

    def save_preview(self, x0: np.ndarray, path: str) -> str:
        """A PNG of (N, C, F, H, W) latents (sides with an oracle draw one)."""
        raise NotImplementedError(f"the {self.kind} teacher draws no latent preview")

    def describe(self) -> dict[str, Any]:
        """What a sample's sidecar records about this side."""
        return {"teacher": self.kind}


class OracleSide(SamplingSide):
    """The side of a teacher with an oracle: the report samples the teacher itself on prompts
    it chooses and names the class each clip is nearest to."""

    oracle: Teacher

    @abc.abstractmethod
    def at_steps(self, steps: int) -> Teacher:
        """The oracle teacher with ``steps`` solver steps (its few-step baseline)."""

    @abc.abstractmethod
    def report_prompts(self, trained: list[str]) -> list[tuple[str, str]]:
        """(prompt, "trained" | "unseen"): a few trained classes and one never cached."""

    @abc.abstractmethod
    def nearest_prompts(self, x0: np.ndarray) -> list[str]:
        """Per sample, a prompt of the class whose mode is nearest to it."""

    @abc.abstractmethod
    def same_class(self, a: str, b: str) -> bool:
        """Whether two prompts name one class."""

    def rendering_note(self) -> str:
        """How the report's frames were drawn (a footnote under its videos)."""
        return f"Decoded by the {self.kind} teacher's renderer, {self.fps:g} fps."
