"""Typed configuration of student training; TOML in, resolved JSON next to every checkpoint.

One reader (``load_config``) and one base (``StageConfig``) for both stages: the fields every
stage has (run, optimiser, learning-rate schedule, checkpoint and log cadence, loader) are
declared once, here. A stage's config subclasses it, adds its own fields and restates the
defaults its recipe needs (stage 2's DMD generator: small lr, beta1 = 0, constant lr). The TOML
keys stay flat (``lr``, not ``optimiser.lr``), so configs and flags read as before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cache_schema.config_file import load_table, load_toml, merged
from cache_schema.store import absolute_url
from cache_schema.typed_config import (
    SEED,
    ConfigError,
    Limits,
    between,
    check_config,
    check_values,
    one_of,
    unknown_keys_message,
)

from .model.config import StudentConfig
from .precision import check_autocast_dtype
from .tracking import TRACKERS, check_trackers

STEPS = between(0, 10_000_000)  # optimiser steps and cadences: an extra zero is refused, not run
RATE = between(0.0, 10.0)  # learning rates
BETAS = between(0.0, 1.0, hi_open=True)  # each AdamW beta
WEIGHT = between(0.0, 1e6)  # loss weights


def load_config(cls: type, path: str | None, table: str, overrides: dict[str, Any], *,
                table_required: bool = False, example: str = "") -> Any:
    """A typed training config: the ``[table]`` of a TOML file, its ``include = "FILE"``
    resolved (cache_schema.config_file, as `s2dit run` does), or the whole file; then the
    non-None ``overrides``. A bad key or value of the file is refused naming the file, the table
    and the key (with the closest known key); one of ``overrides`` as "(in flags)". With
    ``table_required`` a file that has other tables but not this one is refused (it belongs to
    another stage)."""
    data = _file_table(path, table, table_required, example) if path else {}
    if path:
        try:
            cls.check_table(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ConfigError(f"{unknown_keys_message(table, unknown, cls.known_keys())} (in flags)")
    return cls(**merged(data, given))


def _file_table(path: str, table: str, table_required: bool, example: str) -> dict[str, Any]:
    """``[table]`` of the file (a regular file, at most 1 MiB), else its flat keys."""
    table_data = load_table(path, table, "training config")
    if table_data is not None:
        return table_data
    data = load_toml(path, "training config")  # no [table]: a file of flat keys, or another stage's
    if table_required and any(isinstance(v, dict) for v in data.values()):
        tables = sorted(k for k, v in data.items() if isinstance(v, dict))
        raise ValueError(f"{path} has no [{table}] table (it has {tables}); this stage "
                         f"reads [{table}]{f' (see {example})' if example else ''}")
    return data


@dataclass(kw_only=True, slots=True)
class StageConfig:
    """The fields of every training stage, by sub-config (defaults: stage 1's recipe)."""

    TABLE: ClassVar[str] = ""  # the stage's TOML table
    TABLE_REQUIRED: ClassVar[bool] = False  # refuse a file that has other tables but not this
    EXAMPLE: ClassVar[str] = ""
    PATHS: ClassVar[tuple[str, ...]] = ()  # fields naming local files (absolute for workers)
    LIMITS: ClassVar[Limits] = {
        "steps": STEPS, "batch_size": between(1, 1_000_000), "seed": SEED,
        "loss_scale_init": between(1.0, 2.0 ** 64), "lr": RATE, "betas": BETAS,
        "weight_decay": between(0.0, 10.0), "grad_clip": between(0.0, 1e6, lo_open=True),
        "ema_decay": between(0.0, 1.0), "warmup_steps": STEPS, "min_lr_ratio": between(0.0, 1.0),
        "checkpoint_every": between(1, 10_000_000), "checkpoint_every_s": between(0.0, 1e9),
        "log_every": between(1, 10_000_000),
        "buffer_shards": between(1, 1_000_000), "prefetch_shards": between(0, 1_000_000),
        "loader_workers": between(1, 256),
        "cond_dropout": between(0.0, 1.0, hi_open=True),
        "trackers": one_of(*TRACKERS),
    }

    # Keys whose change lets `s2dit run` continue a trained stage from its newest checkpoint
    # (as `s2dit train` on the same --out does) instead of starting it over: "more" only to a
    # larger value (the learning-rate schedule then runs to the new end), "any" for keys that
    # change neither the batches nor the updates. Any other key starts the stage over.
    CONTINUES: ClassVar[Mapping[str, str]] = {
        "steps": "more", "checkpoint_every": "any", "checkpoint_every_s": "any", "log_every": "any",
        "loader_workers": "any", "prefetch_shards": "any", "trackers": "any"}
    # Keys added after checkpoints and compare cells recorded their configs that change neither
    # the batches nor the updates: left out of to_json() at their default, so those records
    # (checkpoint state.json, a compare cell's identity) keep their bytes.
    RECORDED_IF_SET: ClassVar[tuple[str, ...]] = ("trackers",)

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
    # and a checkpoint at the first step this many seconds after the last one (0: steps only),
    # so an interruption loses minutes, not up to checkpoint_every steps
    checkpoint_every_s: float = 300.0
    log_every: int = 10
    # loader (student_train.data.LoaderConfig)
    buffer_shards: int = 8  # shuffle window, in shards
    prefetch_shards: int = 8  # read ahead a whole shuffle window: crossing it does not stall
    loader_workers: int = 1  # shard-reading threads; raise for high-latency object stores
    skip_corrupt_shards: bool = False
    # Conditioning dropout (classifier-free guidance): this share of the stage's text-conditioned
    # regression rows sees the cache's unconditional (negative-prompt) embedding instead of the
    # prompt's, so the student also learns an unconditional mode and can be sampled with
    # guidance != 1. Stage 1: KD rows (target the teacher's v_uncond); stage 2: the causal
    # phase's clips (flow matching only). Drawn per sample (seed, epoch, id). 0: none (as before).
    cond_dropout: float = 0.0
    # Where metrics go besides metrics.jsonl (student_train.tracking): "tensorboard" (local
    # --out), "mlflow", "wandb" (offline unless WANDB_MODE says otherwise); [] for none. One
    # that is not installed is refused here, naming what to pip install.
    trackers: tuple[str, ...] = ("tensorboard",)

    def __post_init__(self) -> None:
        # Types and ranges of every field, the stage's own too (TOML and JSON lists -> tuples).
        check_config(self)
        check_autocast_dtype(self.autocast_dtype)
        check_trackers(self.trackers, self.TABLE or "train")

    @classmethod
    def known_keys(cls) -> list[str]:
        return sorted(f.name for f in dataclasses.fields(cls))

    @classmethod
    def check_table(cls, values: dict[str, Any]) -> None:
        """The keys and values of a (partial) table, before merging: errors name the key."""
        check_values(cls, values, cls.TABLE)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (tuples as lists); ``type(self)(**to_json())`` gives the config back."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
                if not (k in self.RECORDED_IF_SET and v == defaults[k])}

    def with_absolute_paths(self):
        """This config with its ``PATHS`` fields absolute (Ray Train workers, recorded configs)."""
        paths = {k: absolute_url(getattr(self, k)) for k in self.PATHS if getattr(self, k)}
        return dataclasses.replace(self, **paths) if paths else self

    @classmethod
    def load(cls, path: str | None = None, **overrides: Any):
        """The stage's table of a TOML file (or the whole file), then non-None overrides."""
        return load_config(cls, path, cls.TABLE, overrides, table_required=cls.TABLE_REQUIRED,
                           example=cls.EXAMPLE)


@dataclass(kw_only=True, slots=True)
class TrainConfig(StageConfig):
    """Stage 1 (S2DiT-KD), TOML ``[train]``; the shared fields are StageConfig's."""

    TABLE: ClassVar[str] = "train"
    PATHS: ClassVar[tuple[str, ...]] = ("layout_file",)
    LIMITS: ClassVar[Limits] = {
        "steps": between(1, 10_000_000), "kd_weight": WEIGHT, "step_weight": WEIGHT,
        "kd_fraction": between(0.0, 1.0, lo_open=True), "student_steps": between(1, 1000),
    }

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

    @classmethod
    def check_table(cls, values: dict[str, Any]) -> None:
        check_values(cls, values, cls.TABLE)
        if isinstance(values.get("model"), dict):  # [train.model] by key too
            check_values(StudentConfig, values["model"], "train.model")

    def __post_init__(self) -> None:
        StageConfig.__post_init__(self)  # (zero-argument super() fails in slotted dataclasses)
        # [train.model] values now, not after the cache is opened (shapes come from the cache).
        check_values(StudentConfig, self.model, "train.model")
