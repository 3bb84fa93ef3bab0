"""The analytic teacher (DESIGN 4.3): a data distribution known exactly, the quality oracle.

p(x0 | prompt) is a mixture of K Gaussians N(mu_k, s^2 I) whose means are small procedural
latent videos: an object shape, a colour (channel pattern), a direction of motion, and K start
positions (shared by all classes by default). The velocity E[eps - x0 | x] is exact and
1/sigma-free; scoring of generated latents is exact in fp64.
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

from cache_schema import flow

from .base import CODE_VERSION, EncodedText, Teacher

_WORD = re.compile(r"\w+", re.UNICODE)

SHAPES = {
    "square": np.ones((3, 3)),
    "ring": np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=float),
    "cross": np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=float),
    "bar": np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=float),
}
MOTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0), "still": (0, 0)}


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

    def __post_init__(self) -> None:
        unknown = [o for o in self.objects if o not in SHAPES] + [m for m in self.motions if m not in MOTIONS]
        if unknown:
            raise ValueError(f"unknown analytic vocabulary words {unknown}; shapes: {sorted(SHAPES)}, "
                             f"motions: {sorted(MOTIONS)}")


def _hash_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


class AnalyticTeacher(Teacher):
    name = "analytic"

    def __init__(self, config: AnalyticConfig | None = None):
        self.config = config = config or AnalyticConfig()
        self.latent_shape = tuple(config.latent_shape)
        self.text_dim, self.max_text_len = config.text_dim, config.max_text_len
        self.num_steps = config.num_steps
        self.guidance = tuple(config.guidance)
        self.device, self.dtype = torch.device(config.device), torch.float32
        self.classes: list[tuple[str, str, str]] = list(itertools.product(
            config.objects, config.colours, config.motions))
        self.class_index = {c: i for i, c in enumerate(self.classes)}
        self.means = self._build_means()  # (classes, K, C*F*H*W) float64
        self._sigmas = flow.euler_sigmas(config.num_steps, config.shift)

    # -- the data distribution -------------------------------------------------------------
    def _build_means(self) -> np.ndarray:
        cfg = self.config
        c, f, h, w = cfg.latent_shape
        rng = np.random.default_rng(cfg.vocab_seed)
        patterns = {}
        for colour in cfg.colours:  # a fixed channel pattern per colour word, unit norm
            vec = np.random.default_rng(_hash_int(f"colour:{colour}")).standard_normal(c)
            patterns[colour] = vec / np.linalg.norm(vec) * np.sqrt(c) / 2
        shared = rng.integers(0, [h, w], size=(cfg.modes_per_class, 2))
        means = np.zeros((len(self.classes), cfg.modes_per_class, c, f, h, w))
        for ci, (obj, colour, motion) in enumerate(self.classes):
            starts = shared if cfg.shared_positions else np.random.default_rng(
                _hash_int(f"pos:{obj}:{colour}:{motion}:{cfg.vocab_seed}")).integers(
                    0, [h, w], size=(cfg.modes_per_class, 2))
            dy, dx = MOTIONS[motion]
            for k, (y0, x0) in enumerate(starts):
                for t in range(f):
                    canvas = np.zeros((h, w))
                    canvas[:3, :3] = SHAPES[obj]
                    canvas = np.roll(canvas, (y0 + dy * t, x0 + dx * t), axis=(0, 1))
                    means[ci, k, :, t] = patterns[colour][:, None, None] * canvas
        return cfg.amplitude * means.reshape(len(self.classes), cfg.modes_per_class, -1)

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
                found = vocab[_hash_int(f"{i}:{' '.join(words)}") % len(vocab)]
            picks.append(found)
        return self.class_index[tuple(picks)]

    # -- Teacher interface -------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        cfg = dataclasses.asdict(self.config)
        cfg.pop("device")
        return {"teacher": "analytic", "config": cfg, "solver": "euler",
                "means_sha256": hashlib.sha256(self.means.tobytes()).hexdigest(),
                "code_version": CODE_VERSION}

    def sigmas(self) -> np.ndarray:
        return self._sigmas

    def expert_at(self, step: int) -> int:
        return 0 if self.timesteps()[step] >= self.config.boundary_ratio * 1000 else 1

    def encode_prompts(self, prompts: list[str]) -> EncodedText:
        """A fixed deterministic token-embedding table: word -> hashed Gaussian vector."""
        lengths, rows = [], []
        for prompt in prompts:
            words = self.tokens(prompt)[: self.max_text_len] or ["<empty>"]
            vecs = [np.random.default_rng(_hash_int(f"tok:{w}")).standard_normal(self.text_dim)
                    / np.sqrt(self.text_dim) for w in words]
            rows.append(np.stack(vecs))
            lengths.append(len(words))
        emb = np.zeros((len(prompts), max(lengths), self.text_dim), dtype=np.float32)
        for i, row in enumerate(rows):
            emb[i, : len(row)] = row
        return EncodedText(emb=torch.from_numpy(emb).to(self.device), lengths=lengths,
                           prompts=list(prompts))

    def exact_velocity(self, x: np.ndarray, sigma: float, means: np.ndarray) -> np.ndarray:
        """v = ((sigma - a s^2) x - sigma m) / tau^2 with posterior-mean mixture m (fp64).

        x: (B, Dim); means: (B, K, Dim) modes per sample with equal weights.
        """
        s2 = self.config.s ** 2
        a = 1.0 - sigma
        tau2 = a * a * s2 + sigma * sigma
        logits = (a * np.einsum("bd,bkd->bk", x, means)
                  - 0.5 * a * a * np.einsum("bkd,bkd->bk", means, means)) / tau2
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        weights /= weights.sum(axis=1, keepdims=True)
        m = np.einsum("bk,bkd->bd", weights, means)
        return ((sigma - a * s2) * x - sigma * m) / tau2

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

    def score(self, x0: np.ndarray, prompts: list[str]) -> dict[str, float]:
        """Adherence, coverage, dispersion ratio, NLL/dim and temporal consistency (DESIGN 4.3)."""
        x0 = np.asarray(x0, dtype=np.float64)
        n, dim = len(prompts), int(np.prod(self.latent_shape))
        flat = x0.reshape(n, -1)
        classes = np.array([self.class_of(p) for p in prompts])
        all_modes = self.means.reshape(-1, dim)  # (classes*K, Dim)
        d2 = (flat ** 2).sum(1)[:, None] - 2 * flat @ all_modes.T + (all_modes ** 2).sum(1)[None]
        nearest = d2.argmin(1)
        k = self.config.modes_per_class
        adherence = float(np.mean(nearest // k == classes))
        coverage_per_class = []
        for c in np.unique(classes):
            hits = {int(m) % k for m, cl in zip(nearest, classes) if cl == c and m // k == c}
            coverage_per_class.append(len(hits) / k)
        rms = np.sqrt(np.maximum(d2.min(1), 0).mean() / dim)
        nll = float(-self.log_likelihood(x0, prompts).mean() / dim)
        c_, f, h, w = self.latent_shape
        vids = x0.reshape(n, c_, f, h, w)
        modes = all_modes[nearest].reshape(n, c_, f, h, w)
        dv, dm = np.diff(vids, axis=2).reshape(n, -1), np.diff(modes, axis=2).reshape(n, -1)
        denom = np.linalg.norm(dv, axis=1) * np.linalg.norm(dm, axis=1) + 1e-12
        temporal = float(np.mean((dv * dm).sum(1) / denom))
        return {"adherence": adherence, "coverage": float(np.mean(coverage_per_class)),
                "dispersion_ratio": float(rms / self.config.s), "nll_per_dim": nll,
                "temporal_consistency": temporal, "samples": n}

    def sample_true_data(self, prompts: list[str], seed: int = 0) -> np.ndarray:
        """Exact draws from p(x0 | prompt) (for calibrating the scores)."""
        rng = np.random.default_rng(seed)
        classes = np.array([self.class_of(p) for p in prompts])
        modes = rng.integers(0, self.config.modes_per_class, size=len(prompts))
        mu = self.means[classes, modes]
        return (mu + self.config.s * rng.standard_normal(mu.shape)).reshape(len(prompts), *self.latent_shape)
