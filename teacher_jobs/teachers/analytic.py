"""The analytic teacher (DESIGN 4.3): a data distribution known exactly, the quality oracle.

p(x0 | prompt) is a mixture of K Gaussians N(mu_k, s^2 I) whose means are small procedural
latent videos: an object shape, a colour (channel pattern), a direction of motion, and K start
positions (shared by all classes by default); the ``memory`` task adds an identity code and a
bounce (analytic_tasks.py). The velocity E[eps - x0 | x] is exact and 1/sigma-free; scoring of
generated latents is exact in fp64 (analytic_score.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cache_schema import CAUSAL_CHUNK_KEY, causal_chunk_frames, flow

from . import analytic_score
from .analytic_tasks import (
    MOTIONS,
    SHAPES,
    TASKS,
    Period,
    code_tints,
    colour_patterns,
    hash_int,
    memory_factors,
    memory_modes,
    motion_factors,
    motion_modes,
)
from .base import CODE_VERSION, EncodedText, Teacher
from .flow_solvers import SOLVERS, GridSolver

_WORD = re.compile(r"\w+", re.UNICODE)
# Settings of the memory task only: left out of the motion task's fingerprint, so that its
# caches (and sample ids) stay what they were before the memory task existed.
MEMORY_KEYS = ("task", "identity_codes", "visible_frames", "gap_frames")


@dataclass(frozen=True, kw_only=True)
class AnalyticConfig:
    latent_shape: tuple[int, int, int, int] = (4, 5, 8, 8)  # (C, F, H, W)
    objects: tuple[str, ...] = ("square", "ring", "cross")
    colours: tuple[str, ...] = ("red", "green", "blue")
    motions: tuple[str, ...] = ("left", "right")
    modes_per_class: int = 3
    shared_positions: bool = True  # one set of K start positions for every class
    amplitude: float = 1.0
    s: float = 0.1  # std of each mode
    num_steps: int = 24
    shift: float = 3.0
    guidance: tuple[float, float] = (3.0, 3.0)  # (high-noise expert, low-noise expert)
    boundary_ratio: float = 0.875
    text_dim: int = 32
    max_text_len: int = 16
    vocab_seed: int = 0
    device: str = "cpu"
    task: str = "motion"  # "motion" (Markov) or "memory" (identity across a gap, a bounce)
    identity_codes: int = 3  # memory task: tints the object may carry (chance recall 1/codes)
    visible_frames: int = 3  # memory task: frames the object is seen per period
    gap_frames: int = 9  # memory task: blank frames between sightings
    # "unipc": diffusers' UniPC on the same sigma grid (flow_solvers.py), the eval's strong
    # few-step teacher; caches are recorded with Euler (the stored velocity is the step's)
    solver: str = "euler"

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"unknown analytic solver {self.solver!r}; known: {', '.join(SOLVERS)}")
        unknown = [o for o in self.objects if o not in SHAPES] + [m for m in self.motions if m not in MOTIONS]
        if unknown:
            raise ValueError(f"unknown analytic vocabulary words {unknown}; shapes: {sorted(SHAPES)}, "
                             f"motions: {sorted(MOTIONS)}")
        if self.task not in TASKS:
            raise ValueError(f"unknown analytic task {self.task!r}; tasks: {', '.join(TASKS)}")
        if self.task == "memory":
            if "still" in self.motions:
                raise ValueError("the memory task bounces the object: 'still' has no bounce "
                                 "(remove it from motions)")
            if self.identity_codes < 1 or self.visible_frames < 1 or self.gap_frames < 2:
                raise ValueError("the memory task needs identity_codes >= 1, visible_frames >= 1 "
                                 "and gap_frames >= 2")
            if self.latent_shape[1] <= self.visible_frames + self.gap_frames:
                raise ValueError(f"the memory task needs more than visible_frames + gap_frames = "
                                 f"{self.visible_frames + self.gap_frames} latent frames (the object "
                                 f"must reappear); got {self.latent_shape[1]}")

    def at_length(self, frames: int) -> AnalyticConfig:
        """The same task over a clip of ``frames`` latent frames (the tasks are procedural)."""
        c, _, h, w = self.latent_shape
        return dataclasses.replace(self, latent_shape=(c, frames, h, w))


class AnalyticTeacher(Teacher):
    name = "analytic"

    def __init__(self, config: AnalyticConfig | None = None, *, causal_chunk_frames: int = 0):
        self.config = config = config or AnalyticConfig()
        # > 0: the recorder also writes causal ODE pairs of chunks this long (analytic_causal.py)
        self.causal_chunk_frames = int(causal_chunk_frames)
        self.latent_shape = tuple(config.latent_shape)
        self.text_dim, self.max_text_len = config.text_dim, config.max_text_len
        self.num_steps = config.num_steps
        self.guidance = tuple(config.guidance)
        self.device, self.dtype = torch.device(config.device), torch.float32
        self.classes: list[tuple[str, str, str]] = list(itertools.product(
            config.objects, config.colours, config.motions))
        self.class_index = {c: i for i, c in enumerate(self.classes)}
        self.period = Period(config.visible_frames, config.gap_frames) if config.task == "memory" else None
        self.factors = (memory_factors(config.modes_per_class, config.identity_codes) if self.period
                        else motion_factors(config.modes_per_class))
        self.means = self._build_means()  # (classes, K, C*F*H*W) float64
        # Euler by hand (the cached bytes); another solver through its diffusers scheduler
        self._solver = None if config.solver == "euler" else GridSolver(config.solver, config.shift,
                                                                         config.num_steps)
        self._sigmas = (flow.euler_sigmas(config.num_steps, config.shift) if self._solver is None
                        else self._solver.sigmas)

    # -- the data distribution -------------------------------------------------------------
    def _build_means(self) -> np.ndarray:
        cfg = self.config
        c, _, h, w = cfg.latent_shape
        rng = np.random.default_rng(cfg.vocab_seed)
        patterns = colour_patterns(cfg.colours, c)
        tints = code_tints(cfg.identity_codes, c)
        shared = rng.integers(0, [h, w], size=(cfg.modes_per_class, 2))
        means = []
        for obj, colour, motion in self.classes:
            starts = shared if cfg.shared_positions else np.random.default_rng(
                hash_int(f"pos:{obj}:{colour}:{motion}:{cfg.vocab_seed}")).integers(
                    0, [h, w], size=(cfg.modes_per_class, 2))
            if self.period is None:
                means.append(motion_modes(obj, patterns[colour], motion, starts, cfg.latent_shape))
            else:
                means.append(memory_modes(obj, patterns[colour], motion, starts, self.factors,
                                          tints, self.period, cfg.latent_shape))
        return cfg.amplitude * np.stack(means).reshape(len(self.classes), len(self.factors.start), -1)

    @classmethod
    def from_fingerprint(cls, fingerprint: dict[str, Any], device: str = "cpu") -> AnalyticTeacher:
        """The teacher a cache's fingerprint describes (the oracle of its samples)."""
        if fingerprint.get("teacher") != "analytic":
            raise ValueError(f"scoring needs the analytic teacher; this cache was made by "
                             f"{fingerprint.get('teacher')!r}")
        cfg = dict(fingerprint["config"])
        for key in ("latent_shape", "objects", "colours", "motions", "guidance"):
            cfg[key] = tuple(cfg[key])
        return cls(AnalyticConfig(**cfg, device=device, solver=fingerprint.get("solver", "euler")),
                   causal_chunk_frames=causal_chunk_frames(fingerprint))

    def at_length(self, frames: int) -> AnalyticTeacher:
        """This teacher over a clip of ``frames`` latent frames (streaming longer than trained)."""
        return AnalyticTeacher(self.config.at_length(frames))

    def tokens(self, prompt: str) -> list[str]:
        return [t.casefold() for t in _WORD.findall(prompt)]

    def count_tokens(self, prompt: str) -> int:
        return max(1, len(self.tokens(prompt)))

    def class_of(self, prompt: str) -> int:
        """Known words choose attributes; the rest of the text picks missing ones by hash."""
        words = self.tokens(prompt)
        cfg = self.config
        picks = []
        for i, vocab in enumerate((cfg.objects, cfg.colours, cfg.motions)):
            found = next((w for w in words if w in vocab), None)
            if found is None:
                found = vocab[hash_int(f"{i}:{' '.join(words)}") % len(vocab)]
            picks.append(found)
        return self.class_index[tuple(picks)]

    # -- Teacher interface -------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        cfg = dataclasses.asdict(self.config)
        cfg.pop("device")
        solver = cfg.pop("solver")  # at the top level, where every teacher records its solver
        if cfg["task"] == "motion":
            for key in MEMORY_KEYS:
                cfg.pop(key)
        out = {"teacher": "analytic", "config": cfg, "solver": solver,
               "means_sha256": hashlib.sha256(self.means.tobytes()).hexdigest(),
               "code_version": CODE_VERSION}
        if self.causal_chunk_frames:  # only when set: caches without pairs keep their ids
            out[CAUSAL_CHUNK_KEY] = self.causal_chunk_frames
        return out

    def sigmas(self) -> np.ndarray:
        return self._sigmas

    def reset_solver(self) -> None:
        if self._solver is not None:
            self._solver.reset()

    def solver_step(self, x: torch.Tensor, v: torch.Tensor, step: int) -> torch.Tensor:
        if self._solver is None:
            return super().solver_step(x, v, step)
        return self._solver.step(x, v, step)

    def expert_at(self, step: int) -> int:
        return 0 if self.timesteps()[step] >= self.config.boundary_ratio * 1000 else 1

    def encode_prompts(self, prompts: list[str]) -> EncodedText:
        """A fixed deterministic token-embedding table: word -> hashed Gaussian vector."""
        lengths, rows = [], []
        for prompt in prompts:
            words = self.tokens(prompt)[: self.max_text_len] or ["<empty>"]
            vecs = [np.random.default_rng(hash_int(f"tok:{w}")).standard_normal(self.text_dim)
                    / np.sqrt(self.text_dim) for w in words]
            rows.append(np.stack(vecs))
            lengths.append(len(words))
        emb = np.zeros((len(prompts), max(lengths), self.text_dim), dtype=np.float32)
        for i, row in enumerate(rows):
            emb[i, : len(row)] = row
        return EncodedText(emb=torch.from_numpy(emb).to(self.device), lengths=lengths,
                           prompts=list(prompts))

    def exact_velocity(self, x: np.ndarray, sigma: float, means: np.ndarray,
                       log_prior: np.ndarray | None = None) -> np.ndarray:
        """v = ((sigma - a s^2) x - sigma m) / tau^2 with posterior-mean mixture m (fp64).

        x: (B, Dim); means: (B, K, Dim) modes per sample, with equal weights or the (B, K) log
        weights ``log_prior`` (up to a constant per sample: the causal teacher's past evidence).
        """
        s2 = self.config.s ** 2
        a = 1.0 - sigma
        tau2 = a * a * s2 + sigma * sigma
        logits = (a * np.einsum("bd,bkd->bk", x, means)
                  - 0.5 * a * a * np.einsum("bkd,bkd->bk", means, means)) / tau2
        if log_prior is not None:
            logits = logits + log_prior
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        weights /= weights.sum(axis=1, keepdims=True)
        m = np.einsum("bk,bkd->bd", weights, means)
        return ((sigma - a * s2) * x - sigma * m) / tau2

    def causal_trajectories(self, noise: torch.Tensor, x0: np.ndarray, text: EncodedText,
                            neg_text: EncodedText, keep_steps: list[int]
                            ) -> tuple[np.ndarray, np.ndarray]:
        """The exact autoregressive teacher's ODE of every chunk (analytic_causal.py)."""
        from .analytic_causal import causal_trajectories

        assert text.prompts is not None, "analytic teacher needs EncodedText.prompts"
        return causal_trajectories(self, noise, x0, text.prompts, self.causal_chunk_frames,
                                   keep_steps)

    def velocity(self, x: torch.Tensor, step: int, text: EncodedText, neg_text: EncodedText
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = float(self.sigmas()[step])
        flat = x.detach().cpu().double().numpy().reshape(x.shape[0], -1)
        assert text.prompts is not None, "analytic teacher needs EncodedText.prompts"
        cond = self.means[np.array([self.class_of(p) for p in text.prompts])]  # (B, K, Dim)
        all_modes = self.means.reshape(1, -1, flat.shape[1])
        v_c = self.exact_velocity(flat, sigma, cond)
        v_u = self.exact_velocity(flat, sigma, np.broadcast_to(all_modes, (flat.shape[0],) + all_modes.shape[1:]))
        as_t = lambda v: torch.from_numpy(v.reshape(x.shape)).to(x.device, x.dtype)
        return as_t(v_c), as_t(v_u)

    # -- exact scoring -----------------------------------------------------------------------
    def log_likelihood(self, x0: np.ndarray, prompts: list[str]) -> np.ndarray:
        """log p(x0 | prompt) per sample, exact (fp64)."""
        flat = np.asarray(x0, dtype=np.float64).reshape(len(prompts), -1)
        cond = self.means[np.array([self.class_of(p) for p in prompts])]
        s2 = self.config.s ** 2
        d2 = ((flat[:, None, :] - cond) ** 2).sum(-1)
        k, dim = cond.shape[1], flat.shape[1]
        logs = -d2 / (2 * s2) - np.log(k)
        peak = logs.max(axis=1, keepdims=True)
        return (peak[:, 0] + np.log(np.exp(logs - peak).sum(1))) - 0.5 * dim * np.log(2 * np.pi * s2)

    def score(self, x0: np.ndarray, prompts: list[str], **options: Any) -> dict[str, Any]:
        """The oracle's metrics, intervals and gate verdict (analytic_score.score's options:
        reference, reference_stats, chunk_frames, gate)."""
        return analytic_score.score(self, x0, prompts, **options)

    def sample_true_data(self, prompts: list[str], seed: int = 0) -> np.ndarray:
        """Exact draws from p(x0 | prompt) (for calibrating the scores)."""
        rng = np.random.default_rng(seed)
        classes = np.array([self.class_of(p) for p in prompts])
        modes = rng.integers(0, self.means.shape[1], size=len(prompts))
        mu = self.means[classes, modes]
        return (mu + self.config.s * rng.standard_normal(mu.shape)).reshape(len(prompts), *self.latent_shape)
