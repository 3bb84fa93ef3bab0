"""The teacher's samples an evaluation scores against, sampled once per task and noise.

They depend on the teacher (its config and means: the task, the clip length, the solver steps),
the prompts and seeds (so the noise base, the eval seed, per_class and the class set), the
cache's fingerprint digest (the sample ids the noise is keyed by) and the global seed, never on
the checkpoint. So every evaluation of another checkpoint on the same task and noise reuses them:
in one process from memory (``s2dit run``'s eval_kd and eval_ar), across processes from disk.

Disk layout, one entry per key digest (sha256 of the key's canonical JSON):
``<dir>/<digest>.npy`` the x0 (float32, as sampled) and ``<digest>.json`` the key with the
sha256 of the npy's bytes. Each is written to a temporary file and renamed, the json last, so
its presence means the entry is complete; an entry whose key, checksum or shape disagrees is
sampled again and rewritten. The directory: the ``cache_dir`` argument, else the environment
variable S2DIT_EVAL_CACHE, else ``$XDG_CACHE_HOME/s2dit/eval_reference`` (``~/.cache/...``);
``off`` turns the disk cache off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from teacher_jobs.sampler import sample_latents
from teacher_jobs.teachers.analytic import AnalyticConfig, AnalyticTeacher

ENV = "S2DIT_EVAL_CACHE"
OFF = "off"
FORMAT = 1  # of the entries: a new format never reads an old one's files
_MEMORY: dict[str, np.ndarray] = {}


def default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "s2dit" / "eval_reference"


def resolve_dir(cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The cache directory (None: no disk cache) from the argument, S2DIT_EVAL_CACHE, the default."""
    value = os.fspath(cache_dir) if cache_dir is not None else os.environ.get(ENV, "")
    if value == OFF:
        return None
    return Path(value).expanduser() if value else default_dir()


def reference_key(config: AnalyticConfig, prompts: Sequence[str], seeds: Sequence[int], *,
                  fingerprint_digest: str, global_seed: int) -> dict[str, Any]:
    """Everything the teacher's samples depend on, as read back from JSON (tuples as lists)."""
    key = {"format": FORMAT, "teacher": AnalyticTeacher(config).fingerprint(),
           "prompts": list(prompts), "seeds": [int(s) for s in seeds],
           "fingerprint_digest": fingerprint_digest, "global_seed": int(global_seed)}
    return json.loads(json.dumps(key))


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
                                     delete=False) as handle:
        handle.write(data)
    os.replace(handle.name, path)


class ReferenceStore:
    """The disk cache (``root`` None: none; every load misses, every save is dropped)."""

    def __init__(self, root: Path | None):
        self.root = root

    def load(self, key: dict[str, Any], shape: tuple[int, ...]) -> np.ndarray | None:
        if self.root is None:
            return None
        digest = key_digest(key)
        meta_path, data_path = self.root / f"{digest}.json", self.root / f"{digest}.npy"
        try:
            meta = json.loads(meta_path.read_text())
            data = data_path.read_bytes()
        except (OSError, ValueError):
            return None  # absent or half-written: sampled again
        if meta.get("key") != key or meta.get("sha256") != hashlib.sha256(data).hexdigest():
            return None
        x0 = np.load(io.BytesIO(data), allow_pickle=False)
        return x0 if x0.shape == shape and x0.dtype == np.float32 else None

    def save(self, key: dict[str, Any], x0: np.ndarray) -> None:
        if self.root is None:
            return
        digest = key_digest(key)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            np.save(buffer, x0, allow_pickle=False)
            data = buffer.getvalue()
            _atomic_write(self.root / f"{digest}.npy", data)
            meta = {"key": key, "sha256": hashlib.sha256(data).hexdigest(), "shape": list(x0.shape)}
            _atomic_write(self.root / f"{digest}.json", json.dumps(meta, indent=1).encode())
        except OSError as err:  # a read-only or full disk costs the reuse, not the evaluation
            warnings.warn(f"the evaluation's reference cache {self.root} is not writable ({err}); "
                          f"set {ENV} to another directory or to {OFF!r}", stacklevel=2)


def teacher_samples(config: AnalyticConfig, prompts: Sequence[str], seeds: Sequence[int], *,
                    fingerprint_digest: str, global_seed: int, store: ReferenceStore) -> np.ndarray:
    """The teacher's x0 (B, C, F, H, W) float32 for these prompts and seeds: from memory, from
    ``store``, or sampled (and kept in both)."""
    key = reference_key(config, prompts, seeds, fingerprint_digest=fingerprint_digest,
                        global_seed=global_seed)
    digest = key_digest(key)
    if digest not in _MEMORY:
        x0 = store.load(key, (len(prompts), *config.latent_shape))
        if x0 is None:
            x0 = sample_latents(AnalyticTeacher(config), list(prompts), list(seeds),
                                global_seed=global_seed, fingerprint_digest=fingerprint_digest)
            store.save(key, x0)
        _MEMORY[digest] = x0
    return _MEMORY[digest].copy()  # a copy the caller may change


def with_steps(config: AnalyticConfig, steps: int) -> AnalyticConfig:
    return dataclasses.replace(config, num_steps=steps)


def clear_memory() -> None:
    """Forget the samples kept in this process (the disk cache stays)."""
    _MEMORY.clear()


__all__ = ["ENV", "OFF", "ReferenceStore", "clear_memory", "default_dir", "key_digest",
           "reference_key", "resolve_dir", "teacher_samples", "with_steps"]
