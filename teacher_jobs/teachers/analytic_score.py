"""The analytic oracle's score of a set of latent videos against their prompts (exact, fp64).

Every rate comes with its 95% Wilson interval (``<name>_ci``). Beside today's adherence,
coverage and dispersion ratio r (DESIGN 4.3), which degenerate students pass, the score
decomposes each sample against its class's K modes by least squares, x = sum_k c_k mu_k + rest:

- ``amplitude_bias``: mean of c_n - 1 for the nearest mode n (shrinkage: every sample at
  0.6 x its mode gives -0.4; the data give 0 +- s / |mu|);
- ``ghost_energy``: mean |sum_{k != n} c_k mu_k|^2 / |mu_n|^2, energy on the other modes
  (0.7 x one mode + 0.3 x another gives about 0.09);
- ``remainder``: |rest|^2 / (D s^2), the spread left (about 1 for the data, 0 for a collapse);
- ``contrast``: mean (x - m) . (mu_n - m) / |mu_n - m|^2 with m the class's mean mode: how far
  a sample has moved from what its class's modes share towards what sets its own mode apart
  (1 for the data; a sample at m + alpha (mu_n - m) reads alpha). When a class's modes share
  most of their energy (the memory task), a low contrast reads as amplitude bias and ghost
  energy at once (bench/bench_mode_geometry.py); reported beside the reference's, not gated;
- ``mode_tv``: total variation of the nearest-mode frequencies against equal weights (pooled
  over classes: mode k is the same factor combination in every class), its chi-square p-value
  and ``mode_tv_floor``, what a perfect sampler shows at this n;
- memory task: ``recall`` (the identity code of every later sighting equals the first's;
  chance 1 / codes), ``branch_rate`` (went on rather than bounced; 0.5 with a binomial test),
  ``branch_consistency`` over later sightings;
- ``per_chunk``: dispersion, amplitude, contrast and recall per chunk of the clip (streaming
  curves);
- ``motion_ratio``: frame-to-frame change against the nearest mode's (a low-motion shortcut
  reads < 1);
- with a ``reference`` (the teacher's samples from the same noise): ``paired_fidelity``,
  reported, never gated (DESIGN 6: a student learns the distribution, not the noise map).

``gate`` is the verdict of ``Gate`` on these numbers, with the failed checks named;
``legacy_gate`` is the old verdict (adherence, coverage >= 0.95, r in [0.3, 1.3]).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .analytic_stats import binomial_p, chi_square_uniform, tv_floor, wilson


@dataclass(frozen=True, kw_only=True)
class Gate:
    """Bounds of a passing set. Amplitude, ghost and dispersion bounds are relative to a
    reference (the teacher's own full-step samples on the same prompts, ``reference_stats``):
    a student is asked to be as good as the teacher it learns from, not better than the data.
    Without a reference they are taken against the data (bias 0, ghost 0, r 1)."""

    adherence_min: float = 0.95
    coverage_min: float = 0.95
    mode_tv_max: float = 0.05  # above the floor a perfect sampler shows at the same n
    amplitude_bias_max: float = 0.05  # |student's - reference's| mean c_n - 1
    ghost_energy_max: float = 0.01  # student's - reference's mean ghost energy
    # r from lo x the lower to hi x the higher of the reference's r and the data's 1.0: the
    # teacher's own samples are sharper than the data (r about 0.57), and the data must pass
    dispersion_rel: tuple[float, float] = (0.6, 1.6)
    recall_min: float = 0.95  # memory task
    branch_p_min: float = 0.001  # binomial test of the bounce rate against 1/2


LEGACY_GATE = {"adherence_min": 0.95, "coverage_min": 0.95, "dispersion": (0.3, 1.3)}
REFERENCE_KEYS = ("amplitude_bias", "ghost_energy", "dispersion_ratio", "motion_ratio", "contrast")


def _nearest_all(flat: np.ndarray, all_modes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d2 = (flat ** 2).sum(1)[:, None] - 2 * flat @ all_modes.T + (all_modes ** 2).sum(1)[None]
    return d2.argmin(1), np.maximum(d2.min(1), 0)


def _decompose(flat: np.ndarray, modes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Samples (n, D) of one class against its modes (K, D): nearest mode (n,), least-squares
    coefficients (n, K) and the residual energy (n,)."""
    d2 = (flat ** 2).sum(1)[:, None] - 2 * flat @ modes.T + (modes ** 2).sum(1)[None]
    coeffs = np.linalg.lstsq(modes.T, flat.T, rcond=None)[0].T  # (n, K)
    rest = flat - coeffs @ modes
    return d2.argmin(1), coeffs, (rest ** 2).sum(1)


def _phase_modes(x: np.ndarray, modes: np.ndarray, frames: range) -> np.ndarray:
    """Nearest mode (n,) of samples (n, C, F, H, W) against modes (K, C, F, H, W) on ``frames``."""
    sl = slice(frames.start, frames.stop)
    xs = x[:, :, sl].reshape(len(x), -1)
    ms = modes[:, :, sl].reshape(len(modes), -1)
    return _nearest_all(xs, ms)[0]


class _Scorer:
    def __init__(self, teacher, x0: np.ndarray, prompts: list[str], chunk_frames: int):
        self.t = teacher
        self.shape = tuple(teacher.latent_shape)
        self.n, self.dim = len(prompts), int(np.prod(self.shape))
        self.x = np.asarray(x0, dtype=np.float64).reshape(self.n, *self.shape)
        self.flat = self.x.reshape(self.n, -1)
        self.classes = np.array([teacher.class_of(p) for p in prompts])
        self.k = teacher.means.shape[1]
        self.chunk_frames = chunk_frames
        self.s = teacher.config.s

    def per_class(self) -> dict[str, np.ndarray]:
        """Within-class nearest mode, its coefficient, ghost energy, residual and contrast per
        sample."""
        near, amp, ghost, rest, contrast = (np.zeros(self.n, int), np.zeros(self.n), np.zeros(self.n),
                                            np.zeros(self.n), np.zeros(self.n))
        for c in np.unique(self.classes):
            idx = np.flatnonzero(self.classes == c)
            modes = self.t.means[c]
            k, coeffs, residual = _decompose(self.flat[idx], modes)
            own = coeffs[np.arange(len(idx)), k]
            others = coeffs.copy()
            others[np.arange(len(idx)), k] = 0
            norms = (modes[k] ** 2).sum(1)
            near[idx], amp[idx], rest[idx] = k, own, residual
            ghost[idx] = ((others @ modes) ** 2).sum(1) / np.maximum(norms, 1e-12)
            shared = modes.mean(0)  # (D,) what the class's modes share
            apart = modes[k] - shared  # (n, D) what sets each sample's mode apart
            contrast[idx] = (((self.flat[idx] - shared) * apart).sum(1)
                             / np.maximum((apart ** 2).sum(1), 1e-12))
        return {"near": near, "amp": amp, "ghost": ghost, "rest": rest, "contrast": contrast}

    def mode_frequencies(self, near: np.ndarray) -> dict[str, Any]:
        counts = np.bincount(near, minlength=self.k)
        tv = 0.5 * float(np.abs(counts / self.n - 1 / self.k).sum())
        per_class = [0.5 * float(np.abs(np.bincount(near[self.classes == c], minlength=self.k)
                                        / (self.classes == c).sum() - 1 / self.k).sum())
                     for c in np.unique(self.classes)]
        return {"mode_tv": tv, "mode_tv_floor": tv_floor(self.n, self.k),
                "mode_tv_per_class": float(np.mean(per_class)), "mode_chi2_p": chi_square_uniform(counts),
                "mode_counts": counts.tolist()}

    def memory(self) -> dict[str, Any]:
        """Recall of the identity code and the bounce rate, sighting by sighting."""
        period, factors = self.t.period, self.t.factors
        phases = period.phases(self.shape[1])
        codes = np.zeros((self.n, len(phases)), int)
        branches = np.zeros((self.n, len(phases)), int)
        for c in np.unique(self.classes):
            idx = np.flatnonzero(self.classes == c)
            modes = self.t.means[c].reshape(self.k, *self.shape)
            for j, frames in enumerate(phases):
                k = _phase_modes(self.x[idx], modes, frames)
                codes[idx, j], branches[idx, j] = factors.code[k], factors.branch[k]
        later = codes[:, 1:] == codes[:, :1]
        recalled = later.all(1)
        went_on = int(branches[:, 1].sum()) if len(phases) > 1 else 0
        consistent = (branches[:, 2:] == branches[:, 1:2]).all(1) if len(phases) > 2 else np.ones(self.n, bool)
        return {"recall": float(recalled.mean()), "recall_ci": wilson(recalled.sum(), self.n),
                "recall_chance": (1 / factors.codes) ** max(len(phases) - 1, 1),  # a memoryless guess at every later sighting
                "recall_per_sighting": later.mean(0).tolist(),
                "branch_rate": went_on / self.n, "branch_rate_ci": wilson(went_on, self.n),
                "branch_p": binomial_p(went_on, self.n),
                "branch_consistency": float(consistent.mean()),
                "sightings": len(phases), "_codes": codes}

    def per_chunk(self, near: np.ndarray, codes: np.ndarray | None) -> dict[str, list]:
        mu = self.t.means[self.classes, near].reshape(self.n, *self.shape)
        shared = self.t.means.mean(1)[self.classes].reshape(self.n, *self.shape)  # (n, D) without an (n, K, D) copy
        frames = self.shape[1]
        disp, amp, recall, contrast = [], [], [], []
        phase_of = {}
        if codes is not None:
            for j, ph in enumerate(self.t.period.phases(frames)):
                phase_of.update({f: j for f in ph})
        for start in range(0, frames, self.chunk_frames):
            sl = slice(start, min(start + self.chunk_frames, frames))
            xs, ms = self.x[:, :, sl].reshape(self.n, -1), mu[:, :, sl].reshape(self.n, -1)
            disp.append(float(np.sqrt(((xs - ms) ** 2).mean()) / self.s))
            norm = (ms ** 2).sum(1)
            amp.append(float(((xs * ms).sum(1)[norm > 0] / norm[norm > 0]).mean()) if (norm > 0).any() else None)
            # contrast where the modes differ (None in chunks they share, e.g. the memory gap)
            cs = shared[:, :, sl].reshape(self.n, -1)
            apart = ms - cs
            apart_norm = (apart ** 2).sum(1)
            differ = apart_norm > 1e-9 * np.maximum(norm, 1e-12)
            contrast.append(float((((xs - cs) * apart).sum(1)[differ] / apart_norm[differ]).mean())
                            if differ.any() else None)
            seen = sorted({phase_of[f] for f in range(sl.start, sl.stop) if f in phase_of})
            recall.append(float((codes[:, seen] == codes[:, :1]).all(1).mean())
                          if codes is not None and seen else None)
        out = {"chunk_frames": self.chunk_frames, "dispersion": disp, "amplitude": amp, "contrast": contrast}
        if codes is not None:
            out["recall"] = recall
        return out

    def motion_ratio(self, near: np.ndarray) -> float:
        mu = self.t.means[self.classes, near].reshape(self.n, *self.shape)
        dx = np.linalg.norm(np.diff(self.x, axis=2).reshape(self.n, -1), axis=1)
        dm = np.linalg.norm(np.diff(mu, axis=2).reshape(self.n, -1), axis=1)
        return float(np.mean(dx[dm > 0] / dm[dm > 0])) if (dm > 0).any() else 1.0


def score(teacher, x0: np.ndarray, prompts: list[str], *, reference: np.ndarray | None = None,
          reference_stats: dict[str, float] | None = None, chunk_frames: int = 1,
          gate: Gate | None = None) -> dict[str, Any]:
    """Every metric of the module docstring, the gate's verdict and the legacy one."""
    sc = _Scorer(teacher, x0, prompts, chunk_frames)
    all_modes = teacher.means.reshape(-1, sc.dim)
    nearest, d2min = _nearest_all(sc.flat, all_modes)
    hits = nearest // sc.k == sc.classes
    coverage_hits, coverage_cells = 0, 0
    for c in np.unique(sc.classes):
        mine = (sc.classes == c) & hits
        coverage_hits += len(set((nearest[mine] % sc.k).tolist()))
        coverage_cells += sc.k
    pc = sc.per_class()
    out: dict[str, Any] = {
        "samples": sc.n,
        "adherence": float(hits.mean()), "adherence_ci": wilson(hits.sum(), sc.n),
        "coverage": coverage_hits / coverage_cells, "coverage_ci": wilson(coverage_hits, coverage_cells),
        "dispersion_ratio": float(np.sqrt(d2min.mean() / sc.dim) / sc.s),
        "nll_per_dim": float(-teacher.log_likelihood(sc.x, prompts).mean() / sc.dim),
        "temporal_consistency": _temporal(sc, nearest, all_modes),
        "amplitude_bias": float((pc["amp"] - 1).mean()), "amplitude_sd": float(pc["amp"].std()),
        "ghost_energy": float(pc["ghost"].mean()),
        "contrast": float(pc["contrast"].mean()),
        "remainder": float(pc["rest"].mean() / (sc.dim * sc.s ** 2)),
        "motion_ratio": sc.motion_ratio(pc["near"]),
        **sc.mode_frequencies(pc["near"]),
    }
    codes = None
    if teacher.period is not None:
        mem = sc.memory()
        codes = mem.pop("_codes")
        out.update(mem)
    out["per_chunk"] = sc.per_chunk(pc["near"], codes)
    if reference is not None:
        ref = _Scorer(teacher, reference, prompts, chunk_frames).per_class()["near"]
        same = ref == pc["near"]
        out["paired_fidelity"] = float(same.mean())
        out["paired_fidelity_ci"] = wilson(same.sum(), sc.n)
    if reference_stats:
        out["reference"] = {k: reference_stats[k] for k in REFERENCE_KEYS if k in reference_stats}
        out["dispersion_vs_reference"] = out["dispersion_ratio"] / max(reference_stats["dispersion_ratio"], 1e-12)
    out["gate"] = verdict(out, gate or Gate(), reference_stats)
    out["legacy_gate"] = legacy_verdict(out)
    return out


def _temporal(sc: _Scorer, nearest: np.ndarray, all_modes: np.ndarray) -> float:
    vids = sc.x
    modes = all_modes[nearest].reshape(sc.n, *sc.shape)
    dv, dm = np.diff(vids, axis=2).reshape(sc.n, -1), np.diff(modes, axis=2).reshape(sc.n, -1)
    denom = np.linalg.norm(dv, axis=1) * np.linalg.norm(dm, axis=1) + 1e-12
    return float(np.mean((dv * dm).sum(1) / denom))


def verdict(s: dict[str, Any], gate: Gate, reference: dict[str, float] | None = None) -> dict[str, Any]:
    """{"passed": bool, "failed": [check names], "checks": {name: [value, bound, passed]}}."""
    ref = {"amplitude_bias": 0.0, "ghost_energy": 0.0, "dispersion_ratio": 1.0, **(reference or {})}
    lo, hi = gate.dispersion_rel
    r_ref = max(ref["dispersion_ratio"], 1e-12)
    r_rel = s["dispersion_ratio"] / r_ref
    r_lo, r_hi = lo * min(1.0, 1 / r_ref), hi * max(1.0, 1 / r_ref)  # in units of r_ref
    bias_gap = abs(s["amplitude_bias"] - ref["amplitude_bias"])
    checks = {
        "adherence": (s["adherence"], f">= {gate.adherence_min}", s["adherence"] >= gate.adherence_min),
        "coverage": (s["coverage"], f">= {gate.coverage_min}", s["coverage"] >= gate.coverage_min),
        "mode_tv": (s["mode_tv"], f"<= {gate.mode_tv_max} + floor {s['mode_tv_floor']:.3f}",
                    s["mode_tv"] <= gate.mode_tv_max + s["mode_tv_floor"]),
        "amplitude_bias": (s["amplitude_bias"], f"within {gate.amplitude_bias_max} of {ref['amplitude_bias']:.3f}",
                           bias_gap <= gate.amplitude_bias_max),
        "ghost_energy": (s["ghost_energy"], f"<= {ref['ghost_energy']:.4f} + {gate.ghost_energy_max}",
                         s["ghost_energy"] <= ref["ghost_energy"] + gate.ghost_energy_max),
        "dispersion": (r_rel, (f"r / {r_ref:.3f} in [{r_lo:.3f}, {r_hi:.3f}] (r in [{lo} x, {hi} x] "
                               f"its reference's and the data's 1.0)"), r_lo <= r_rel <= r_hi),
    }
    if "recall" in s:
        checks["recall"] = (s["recall"], f">= {gate.recall_min}", s["recall"] >= gate.recall_min)
        checks["branch"] = (s["branch_p"], f"binomial p >= {gate.branch_p_min}", s["branch_p"] >= gate.branch_p_min)
    checks = {k: [float(v), bound, bool(ok)] for k, (v, bound, ok) in checks.items()}
    failed = [k for k, (_, _, ok) in checks.items() if not ok]
    return {"passed": not failed, "failed": failed, "checks": checks, "gate": asdict(gate)}


def legacy_verdict(s: dict[str, Any]) -> bool:
    lo, hi = LEGACY_GATE["dispersion"]
    return bool(s["adherence"] >= LEGACY_GATE["adherence_min"] and s["coverage"] >= LEGACY_GATE["coverage_min"]
                and lo <= s["dispersion_ratio"] <= hi)


def reference_stats_of(scores: dict[str, Any]) -> dict[str, float]:
    """The numbers a student's gate is measured against, from a reference set's score."""
    return {k: float(scores[k]) for k in REFERENCE_KEYS if k in scores}  # contrast: since session 15


__all__ = ["LEGACY_GATE", "Gate", "legacy_verdict", "reference_stats_of", "score", "verdict"]
