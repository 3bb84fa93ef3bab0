"""``trajectory``: states and velocities stored as residuals against what the solver predicts.

Along a trajectory almost nothing is new from one stored step to the next: the state follows
from the previous state and the guided velocity, and the velocities change slowly. Per record,
in step order (every prediction uses only values already decoded, so decoding is causal):

* ``v_uncond[i]``: ``hold`` (v_uncond[i-1]) or ``linear`` (extrapolated along sigma from the two
  previous ones); at i = 0, noise - x0 (the velocity of a straight path from the stored x0);
* ``v_cond[i]``: v_cond[i-1] + (v_uncond[i] - v_uncond[i-1]) (the guidance gap moves slowly);
  at i = 0, the v_cond whose CFG velocity is noise - x0;
* ``states[i]``: ``euler`` (x[i-1] + (sigma_i - sigma_{i-1}) v_cfg[i-1]) or ``ab2`` (plus the
  second-order Adams-Bashforth term: closer for multistep solvers such as UniPC); at i = 0,
  (1 - sigma_0) x0 + sigma_0 noise (the noise itself when step 0 is kept).

Sigma and guidance are the stored ones, so a ``keep_steps`` subset predicts across the gaps
between kept steps from what is stored. Predictions are float32 numpy (IEEE, elementwise, one
fixed order), rounded to the cache's half dtype; what is stored is the bit-domain residual
(``bits.residual``), byte-shuffled and zstd-coded by Blosc. Each record picks, per field, the
predictor whose residuals are smallest (recorded in ``trajectory_predictors``), measured on a
fixed strided subset of the latent's elements when it is large (every prediction is elementwise,
so the subset's predictions are exactly the full ones' elements). Decoding adds the residual to
the same prediction, so it is bit-exact whatever the prediction's quality; a worse prediction
only costs bytes.

Cost at Wan size (16x21x60x104): each step's float32 view and CFG velocity is computed once
and dropped two steps later (a step's predictions read steps i-1 and i-2 only), and only the
chosen predictor runs over the whole latent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ..fields import CacheLayout
from . import bits
from .base import Codec
from .plain import blosc_zstd

F32 = np.float32
STATE_PREDICTORS = ("euler", "ab2")
UNCOND_PREDICTORS = ("hold", "linear")
COND_PREDICTORS = ("gap",)
PREDICTORS_KEY = "trajectory_predictors"  # per record: uint8 (states, v_uncond, v_cond) choices
CHOICE_ELEMENTS = 1 << 16  # latents larger than this pick predictors on a strided subset
LATENT_FIELDS = ("noise", "x0", "states", "v_cond", "v_uncond")


class _Trajectory:
    """The values of one record as they are decoded (or known, when encoding), float32 views
    computed on demand; predictions of step i read only steps < i (and v_uncond[i] for v_cond)."""

    def __init__(self, values: Mapping[str, Any], half: np.dtype):
        self.half = half
        self.sigmas = np.asarray(values["sigmas"], dtype=F32)
        self.guidance = np.asarray(values["guidance"], dtype=F32)
        self.noise = np.asarray(values["noise"]).astype(F32)
        self.x0 = np.asarray(values["x0"]).astype(F32)
        self.arrays: dict[str, np.ndarray] = {}
        self._f32: dict[tuple[str, int], np.ndarray] = {}  # (field or "cfg", step) -> float32

    def f32(self, name: str, i: int) -> np.ndarray:
        """Step ``i`` of ``name`` as float32 (step i must be known or decoded already)."""
        got = self._f32.get((name, i))
        if got is None:
            got = self._f32[(name, i)] = self.arrays[name][i].astype(F32)
        return got

    def cfg(self, i: int) -> np.ndarray:
        got = self._f32.get(("cfg", i))
        if got is None:
            vu = self.f32("v_uncond", i)
            got = self._f32[("cfg", i)] = vu + self.guidance[i] * (self.f32("v_cond", i) - vu)
        return got

    def forget(self, i: int) -> None:
        """Drop the float32 views of step ``i`` (no prediction after step i + 2 reads them)."""
        for key in [k for k in self._f32 if k[1] == i]:
            del self._f32[key]

    def predict(self, name: str, i: int, kind: str) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return getattr(self, f"_{name}")(i, kind).astype(self.half)

    def _v_uncond(self, i: int, kind: str) -> np.ndarray:
        if i == 0:
            return self.noise - self.x0
        prev = self.f32("v_uncond", i - 1)
        if kind == "hold" or i < 2:
            return prev
        s = self.sigmas
        span = s[i - 1] - s[i - 2]
        ratio = (s[i] - s[i - 1]) / span if span != 0 else F32(0)
        return prev + F32(ratio) * (prev - self.f32("v_uncond", i - 2))

    def _v_cond(self, i: int, kind: str) -> np.ndarray:
        vu = self.f32("v_uncond", i)
        if i == 0:
            g = self.guidance[0]
            straight = self.noise - self.x0
            return vu + (straight - vu) / g if g != 0 else vu
        return self.f32("v_cond", i - 1) + (vu - self.f32("v_uncond", i - 1))

    def _states(self, i: int, kind: str) -> np.ndarray:
        s = self.sigmas
        if i == 0:
            return (F32(1) - s[0]) * self.x0 + s[0] * self.noise
        h = s[i] - s[i - 1]
        v = self.cfg(i - 1)
        if kind == "ab2" and i >= 2 and s[i - 1] != s[i - 2]:
            h0 = s[i - 1] - s[i - 2]
            v = v + (h / (F32(2) * h0)) * (v - self.cfg(i - 2))
        return self.f32("states", i - 1) + h * v


# Decoding order within a step: each field's prediction may use the ones before it.
_ORDER = (("v_uncond", UNCOND_PREDICTORS), ("v_cond", COND_PREDICTORS),
          ("states", STATE_PREDICTORS))


class Trajectory(Codec):
    name: ClassVar[str] = "trajectory"
    step_chunks: ClassVar[bool] = False  # step i needs steps < i: a record's steps travel together
    transformed: ClassVar[tuple[str, ...]] = ("states", "v_cond", "v_uncond")
    depends: ClassVar[tuple[str, ...]] = ("sigmas", "guidance", "noise", "x0")
    extra: ClassVar[dict[str, tuple[str, tuple[int, ...]]]] = {PREDICTORS_KEY: ("uint8", (3,))}

    def compressor(self):
        return blosc_zstd()

    def transform(self, record: Mapping[str, Any], layout: CacheLayout) -> dict[str, np.ndarray]:
        half = layout.numpy_dtype_of("states")
        kinds = _choose(record, layout, half)
        known = _Trajectory(record, half)
        known.arrays = {name: np.asarray(record[name]) for name, _ in _ORDER}
        out = {name: np.empty(known.arrays[name].shape, np.uint16) for name, _ in _ORDER}
        for i in range(layout.num_kept):
            for name, _ in _ORDER:
                out[name][i] = bits.residual(known.arrays[name][i],
                                             known.predict(name, i, kinds[name]))
            known.forget(i - 2)
        out[PREDICTORS_KEY] = np.array([STATE_PREDICTORS.index(kinds["states"]),
                                        UNCOND_PREDICTORS.index(kinds["v_uncond"]),
                                        COND_PREDICTORS.index(kinds["v_cond"])], np.uint8)
        return out

    def untransform(self, stored: Mapping[str, np.ndarray], values: Mapping[str, Any],
                    layout: CacheLayout) -> dict[str, np.ndarray]:
        half = layout.numpy_dtype_of("states")
        traj = _Trajectory(values, half)
        states_kind, uncond_kind, cond_kind = (int(c) for c in stored[PREDICTORS_KEY])
        kinds = {"v_uncond": UNCOND_PREDICTORS[uncond_kind], "v_cond": COND_PREDICTORS[cond_kind],
                 "states": STATE_PREDICTORS[states_kind]}
        for name, _ in _ORDER:
            traj.arrays[name] = np.empty(stored[name].shape, half)
        for i in range(layout.num_kept):
            for name, _ in _ORDER:
                predicted = traj.predict(name, i, kinds[name])
                traj.arrays[name][i] = bits.apply_residual(predicted, stored[name][i])
            traj.forget(i - 2)
        return traj.arrays


def _subset(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` with its latent fields cut to a fixed strided subset of the latent's elements
    (all of them when the latent is small)."""
    size = int(np.prod(np.shape(record["noise"])))
    stride = max(1, size // CHOICE_ELEMENTS)
    if stride == 1:
        return dict(record)
    out = dict(record)
    for name in LATENT_FIELDS:
        value = np.asarray(record[name])
        lead = value.shape[: value.ndim - 4]  # (S,) for step fields, () for noise and x0
        out[name] = np.ascontiguousarray(value.reshape(*lead, size)[..., ::stride])
    return out


def _choose(record: Mapping[str, Any], layout: CacheLayout, half: np.dtype) -> dict[str, str]:
    """{field: predictor} whose residuals are smallest (``bits.cost``) on ``_subset``."""
    sample = _subset(record)
    known = _Trajectory(sample, half)
    known.arrays = {name: np.asarray(sample[name]) for name, _ in _ORDER}
    kinds: dict[str, str] = {}
    for name, options in _ORDER:
        best = None
        for kind in options:
            size = sum(bits.cost(bits.residual(known.arrays[name][i], known.predict(name, i, kind)))
                       for i in range(layout.num_kept))
            if best is None or size < best[0]:
                best = (size, kind)
        kinds[name] = best[1]
    return kinds
