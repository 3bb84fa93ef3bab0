"""``[compare]``: which students to train side by side, on how many seeds, scored how.

    [compare]
    seeds = [0, 1, 2]          # training seeds of every variant
    lengths = [1, 4]           # S2DiT-AR streamed at these multiples of the trained length
    per_class = 96             # held-out samples per class of each evaluation
    [compare.variants]         # name -> [train.model] overrides on the run's own model
    s2dit = {}
    full_attention = {layout = ["ssa:1", "ssa:1", "ssa:1", "ssa:1"]}

A variant is a table of ``StudentConfig`` keys laid over the run's ``[train.model]``; an
unknown key is refused naming the variant and the key. Every variant is trained with the run's
``[train]`` and ``[train_ar]`` recipes from the run's cache, only the architecture differs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cache_schema.typed_config import (
    ConfigError,
    Limits,
    between,
    check_config,
    check_values,
    one_of,
)
from student_train.model import StudentConfig

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # a variant's name is its folder's


@dataclass(kw_only=True, slots=True)
class CompareConfig:
    TABLE: ClassVar[str] = "compare"
    LIMITS: ClassVar[Limits] = {
        "seeds": between(0, 2**31 - 1, min_len=1, max_len=64),
        "lengths": between(1, 64, min_len=1, max_len=8),
        "per_class": between(1, 100_000), "noise": one_of("report", "tune"),
        "latency_batch": between(1, 4096), "latency_repeats": between(1, 100),
        "samples": between(0, 64),
    }

    variants: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    lengths: tuple[int, ...] = (1,)
    per_class: int = 24
    noise: str = "report"  # "tune" for recipe decisions (pipeline/eval.py SEED_BASES)
    # Per-chunk latency: streams per measured batch (amortises the interpreter's per-op cost,
    # so the seconds are the model's compute on this machine) and passes (median per chunk)
    latency_batch: int = 16
    latency_repeats: int = 3
    samples: int = 0  # prompts rendered to video per variant (its first seed); 0: none

    def __post_init__(self) -> None:
        check_config(self)
        if not self.variants:
            raise ConfigError("[compare] needs variants: a table of name = {[train.model] "
                              "overrides}, e.g. s2dit = {} for the run's own model")
        for name, overrides in self.variants.items():
            if not NAME.fullmatch(name):
                raise ConfigError(f"[compare.variants] {name!r}: a variant's name is its folder "
                                  "name: letters, digits, '_' and '-'")
            check_values(StudentConfig, overrides, f"compare.variants.{name}")
        if len(set(self.seeds)) != len(self.seeds) or len(set(self.lengths)) != len(self.lengths):
            raise ConfigError(f"[compare] seeds and lengths must not repeat, got seeds "
                              f"{list(self.seeds)}, lengths {list(self.lengths)}")

    @property
    def longest(self) -> int:
        return max(self.lengths)

    def model(self, base: dict[str, Any], name: str) -> dict[str, Any]:
        """Variant ``name``'s [train.model] table: the run's ``base`` with its overrides."""
        return {**base, **self.variants[name]}
