"""The teachers' flow-matching solvers (DESIGN 4.1), diffusers' schedulers in flow mode.

One place builds a solver's scheduler by name: the Wan teacher on its checkpoint's scheduler
config, and the analytic teacher on diffusers' defaults (``solver = "unipc"``: the eval's
strong few-step teacher, ``teacher_{N}step_unipc``). Both step a scheduler by index from
``set_begin_index(0)``, after ``set_timesteps`` on their grid.

Why UniPC and not DPM-Solver++ for the analytic teacher: UniPC's ``set_timesteps`` takes the
unshifted sigmas, so it runs on the analytic grid (shift(linspace(1, 0, N + 1)), the first
sigma nudged to 1 - 1e-6 by diffusers); DPMSolverMultistepScheduler (diffusers 0.42) has no
custom sigmas and its flow grid starts at shift(0.999), another grid than the teacher's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# solver name -> the diffusers scheduler class it uses (a Wan fingerprint records the class)
SOLVERS = {"euler": "FlowMatchEulerDiscreteScheduler", "unipc": "UniPCMultistepScheduler"}


def flow_scheduler(solver: str, shift: float, base: dict[str, Any] | None = None):
    """The diffusers scheduler of ``solver`` in flow mode with ``shift``, over ``base`` (a
    scheduler config; None: diffusers' defaults)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    base = dict(base or {})
    if solver == "euler":
        return FlowMatchEulerDiscreteScheduler.from_config(base, shift=shift)
    if solver == "unipc":
        return UniPCMultistepScheduler.from_config(base, flow_shift=shift, use_flow_sigmas=True,
                                                   prediction_type="flow_prediction")
    raise ValueError(f"unknown flow solver {solver!r}; known: {', '.join(SOLVERS)}")


class GridSolver:
    """A multistep scheduler on the shifted uniform grid shift(linspace(1, 0, N + 1)), stepped
    by index; ``reset`` clears its history before each batch (its step counter and past
    velocities are per instance: one batch at a time)."""

    def __init__(self, solver: str, shift: float, num_steps: int):
        self.scheduler = flow_scheduler(solver, shift)
        self.num_steps = num_steps
        self.reset()
        # the scheduler's sigmas (num_steps + 1, ending at 0): the teacher's velocity is
        # evaluated at exactly these
        self.sigmas = self.scheduler.sigmas.float().numpy()

    def reset(self) -> None:
        grid = np.linspace(1.0, 0.0, self.num_steps + 1)[:-1]  # the scheduler applies the shift
        self.scheduler.set_timesteps(sigmas=grid.copy())
        self.scheduler.set_begin_index(0)

    def step(self, x: torch.Tensor, v: torch.Tensor, step: int) -> torch.Tensor:
        return self.scheduler.step(v, self.scheduler.timesteps[step], x, return_dict=False)[0]
