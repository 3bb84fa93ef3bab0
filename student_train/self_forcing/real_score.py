"""The real score of DMD: what the generator's distribution is pulled toward.

A real score maps a noised generated video to a velocity: ``score(x_t, sigma, batch) -> v``
with x_t (B, C, F, H, W), sigma (B,), v (B, C, F, H, W) (v = eps - x0, DESIGN 4.1). Stage 2
uses the frozen S2DiT-KD by default (no teacher runs online). Anything else that knows the
data distribution can be passed in by the caller, e.g. the exact analytic teacher for
diagnosis (bench/bench_ar_quality.py ``--real-score analytic``): student_train never imports a
teacher (teacher_jobs and student_train stay apart), the caller builds one.

Guidance: S2DiT-KD learned the teacher's CFG velocity (guidance baked in, DESIGN 6 stage 1) and
never saw an unconditional text input, so its real score has no guidance knob; a real score with
a conditional and an unconditional branch (the analytic one) takes ``guidance`` itself.
"""

from __future__ import annotations

from typing import Protocol

import torch

from .batch import ARBatch


class RealScore(Protocol):
    name: str

    def __call__(self, x_t: torch.Tensor, sigma: torch.Tensor, batch: ARBatch) -> torch.Tensor:
        ...


class KDRealScore:
    """The frozen S2DiT-KD EMA model, bidirectional, d = 0."""

    name = "kd"

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def __call__(self, x_t, sigma, batch):
        return self.model(x_t, sigma, torch.zeros_like(sigma), batch.text, batch.text_mask)
