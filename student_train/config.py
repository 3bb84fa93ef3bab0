"""Typed configuration of student training; TOML in, resolved JSON next to every checkpoint.

One reader (``load_config``) and one base (``StageConfig``) for both stages: the fields every
stage has (run, optimiser, learning-rate schedule, checkpoint and log cadence, loader) are
declared once, here. A stage's config subclasses it, adds its own fields and restates the
defaults its recipe needs (stage 2's DMD generator: small lr, beta1 = 0, constant lr). The TOML
keys stay flat (``lr``, not ``optimiser.lr``), so configs and flags read as before.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import fsspec

from .precision import check_autocast_dtype


def load_config(cls: type, path: str | None, table: str, overrides: dict[str, Any], *,
                table_required: bool = False, example: str = "") -> Any:
    """A typed training config: the ``[table]`` of a TOML file (or the whole file), then the
    non-None ``overrides``; unknown keys are refused by name. With ``table_required`` a file
    that has other tables but not this one is refused (it belongs to another stage)."""
    data: dict[str, Any] = {}
    if path:
        with fsspec.open(path, "rb") as handle:
            try:
                data = tomllib.load(handle)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"training config {path} is not valid TOML: {exc}") from exc
        if table in data:
            data = data[table]
        elif table_required and any(isinstance(v, dict) for v in data.values()):
            tables = sorted(k for k, v in data.items() if isinstance(v, dict))
            raise ValueError(f"{path} has no [{table}] table (it has {tables}); this stage reads "
                             f"[{table}]{f' (see {example})' if example else ''}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown [{table}] config keys {unknown} (in {path or 'flags'}); "
                         f"known: {', '.join(sorted(known))}")
    return cls(**data)


@dataclass(kw_only=True, slots=True)
class StageConfig:
    """The fields of every training stage, by sub-config (defaults: stage 1's recipe)."""

    TABLE: ClassVar[str] = ""  # the stage's TOML table
    TABLE_REQUIRED: ClassVar[bool] = False  # refuse a file that has other tables but not this
    EXAMPLE: ClassVar[str] = ""

    # run
    steps: int = 600  # optimiser steps
    batch_size: int = 64  # global batch (trajectories per step), split over the ranks
    seed: int = 0
    device: str = "cpu"
    # Mixed precision (student_train.precision): "bfloat16" or "float16" on GPU; unset = fp32
    # (the right choice on CPU). float16 scales the loss, starting at loss_scale_init.
    autocast_dtype: str | None = None
    loss_scale_init: float = 2.0 ** 16
    # optimiser (AdamW), clipping, EMA of the trained model
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    # learning-rate schedule (student_train.schedule): linear warm-up, cosine to lr * min_lr_ratio
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05
    # checkpoint and log cadence, in steps (and always at the end and at a phase boundary)
    checkpoint_every: int = 200
    log_every: int = 10
    # loader (student_train.data.LoaderConfig)
    buffer_shards: int = 8  # shuffle window, in shards
    prefetch_shards: int = 8  # read ahead a whole shuffle window: crossing it does not stall
    loader_workers: int = 1  # shard-reading threads; raise for high-latency object stores
    skip_corrupt_shards: bool = False

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # TOML and JSON give lists where tuples are typed
            if "tuple" in str(f.type) and isinstance(getattr(self, f.name), list):
                setattr(self, f.name, tuple(getattr(self, f.name)))
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError("steps must be >= 0 and batch_size >= 1")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("checkpoint_every and log_every must be >= 1")
        check_autocast_dtype(self.autocast_dtype)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (tuples as lists); ``type(self)(**to_json())`` gives the config back."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def load(cls, path: str | None = None, **overrides: Any):
        """The stage's table of a TOML file (or the whole file), then non-None overrides."""
        return load_config(cls, path, cls.TABLE, overrides, table_required=cls.TABLE_REQUIRED,
                           example=cls.EXAMPLE)


@dataclass(kw_only=True, slots=True)
class TrainConfig(StageConfig):
    """Stage 1 (S2DiT-KD), TOML ``[train]``; the shared fields are StageConfig's."""

    TABLE: ClassVar[str] = "train"

    kd_weight: float = 1.0  # (a) knowledge distillation, step size 0
    step_weight: float = 1.0  # (b) step distillation, step size > 0
    # Share of trajectories that also give a KD row (every one gives a step row); below 1 the
    # step costs less. Drawn per sample (seed, epoch, id), so rank splits see the same rows.
    kd_fraction: float = 1.0
    student_steps: int = 4  # few-step schedule on the teacher's stored grid
    sigma_jitter: bool = True  # KD rows anywhere along Euler segments, not only on the grid
    expect_fingerprint_digest: str | None = None  # refuse a cache from another teacher setup
    # The student architecture: `s2dit search --out` file (layout_file), then these overrides.
    layout_file: str | None = None
    model: dict[str, Any] = field(default_factory=dict)  # StudentConfig overrides

    def __post_init__(self) -> None:
        StageConfig.__post_init__(self)  # (zero-argument super() fails in slotted dataclasses)
        if self.steps < 1 or self.student_steps < 1:
            raise ValueError("steps, batch_size and student_steps must be >= 1")
        if not 0.0 < self.kd_fraction <= 1.0:
            raise ValueError(f"kd_fraction must be in (0, 1], got {self.kd_fraction}")
