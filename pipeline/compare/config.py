"""``[compare]``: which students to train side by side, on how many seeds, scored how.

    [compare]
    seeds = [0, 1, 2]          # training seeds of every variant
    lengths = [1, 4]           # S2DiT-AR streamed at these multiples of the trained length
    per_class = 96             # held-out samples per class of each evaluation
    [compare.variants]         # name -> [train.model] overrides on the run's own model
    s2dit = {}
    full_attention = {layout = ["ssa:1", "ssa:1", "ssa:1", "ssa:1"]}
    no_causal_phase = {train_ar = {causal_steps = 0}}   # a recipe override
    costly_baseline = {dim = 192, seeds = [0, 1]}     # on some of the seeds only

The cells are scored as ``s2dit eval`` scores (pipeline/eval.py), with the grid's own settings
beside ``per_class``, ``lengths`` and ``noise`` (the run's ``[eval]`` scores the run's own
students; of it the grid takes only ``seed``, the held-out noise):

    [compare]
    guidance = 3.0             # classifier-free guidance of every student (default 1: off)
    unseen = "validation"      # which unseen classes: "all" (default), "report", "validation"
    lcha_window = "trained"    # LCHA's streaming sums windowed, past chunks (default: as trained)

``guidance`` != 1 needs every variant trained with conditioning dropout (``cond_dropout`` of
the recipes, as ``s2dit eval --guidance`` refuses a checkpoint without it): a variant without
is refused before anything trains; its per-chunk cost is measured guided too (one doubled
batch). ``unseen = "validation"`` scores the held-out classes kept for recipe decisions (with
``noise = "tune"``: a grid that chooses a recipe), never a reported figure; ``"report"`` the
others. ``lcha_window`` streams every student with LCHA blocks with its sums windowed
(student_train/model/bounded.py long_stream; "trained": the clip's chunks minus the sink and the
current one), scored and timed so; it changes nothing within the trained length. At their
defaults none is part of a cell's evaluation key nor of results.json, so a grid scored before
they existed is not scored again.

Cells side by side (pipeline/compare/cells.py): ``max_parallel`` cells train at once, each
(train, score, sample) as a Ray task with the resources of the section's ``ray`` table, which
has the shape of every stage's (pipeline/graph/config.py TaskResources):

    [compare]
    max_parallel = 2                                # default 1
    ray = {num_cpus = 1, num_gpus = 0, memory_gb = 4}

Without a ``ray`` table and with ``max_parallel = 1`` (the default) the cells train in this
process one after another; ``max_parallel`` > 1 without a table runs Ray tasks of the table's
defaults (1 CPU). A cell's files are the same bytes either way, given the driver's thread counts
(Ray starts a task with OMP_NUM_THREADS = its num_cpus: torch's threads and numpy's BLAS's). The
per-chunk cost is always measured in the driver, after every cell, so that its figures stay
comparable.

A variant is a table of ``StudentConfig`` keys laid over the run's ``[train.model]`` and,
under the name of a training stage's table (``train``, ``train_ar``: the registered stages'),
keys laid over that stage's recipe; an unknown key is refused naming the variant and the key.
Every variant is trained with the run's recipes from the run's cache, with only its overrides
changed (the architecture lives in ``[train.model]``, so a recipe override holds no ``model``;
the seed is ``seeds``'s). A variant's own ``seeds`` (some of ``[compare] seeds``) trains it on
those only: a costly baseline beside a recipe reported over more seeds. Its intervals are over
its own seeds, and it is compared with the reference by Welch's interval (paired only over the
same seeds).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from cache_schema.typed_config import (
    ConfigError,
    Limits,
    between,
    check_config,
    check_values,
    one_of,
)
from student_train.model import StudentConfig
from student_train.stages import get_stage, stage_names
from teacher_jobs.analytic_corpus import UNSEEN_SUBSETS

from .matching_spec import VARIANT_SEEDS, check_reference, found_spec, model_keys

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # a variant's name is its folder's
NOT_A_RECIPE_KEY = {"model": "the architecture goes at the variant's top level ([train.model] keys)",
                    "seed": "every variant trains on [compare] seeds"}


def recipe_tables() -> dict[str, type]:
    """{TOML table: config class} of every registered training stage (what a variant may
    override besides the model)."""
    stages = (get_stage(name) for name in stage_names())
    return {stage.table: stage.config for stage in stages}


def _check_variant(name: str, overrides: Any, variants: dict[str, Any],
                   seeds: tuple[int, ...]) -> None:
    where = f"compare.variants.{name}"
    if not isinstance(overrides, dict):
        raise ConfigError(f"[{where}] must be a table of [train.model] keys and recipe tables, "
                          f"got {overrides!r}")
    own = overrides.get(VARIANT_SEEDS, seeds)
    if (not isinstance(own, (list, tuple)) or not own or len(set(own)) != len(own)
            or not all(isinstance(s, int) and s in seeds for s in own)):
        raise ConfigError(f"[{where}] seeds = {own!r}: a variant's own seeds are some of [compare] "
                          f"seeds {list(seeds)}, each once (or leave it out: all of them)")
    spec = found_spec(name, overrides)  # a `match` or `search` table (matching_spec.py)
    if spec is not None:
        check_reference(name, spec, variants)
    tables = recipe_tables()
    check_values(StudentConfig, {k: v for k, v in model_keys(overrides).items() if k not in tables}, where)
    for table, values in overrides.items():
        if table not in tables:
            continue
        check_values(tables[table], values, f"{where}.{table}")
        for key in sorted(set(values) & set(NOT_A_RECIPE_KEY)):
            raise ConfigError(f"[{where}.{table}] key {key!r}: {NOT_A_RECIPE_KEY[key]}")


@dataclass(kw_only=True, slots=True)
class CompareConfig:
    TABLE: ClassVar[str] = "compare"
    LIMITS: ClassVar[Limits] = {
        "seeds": between(0, 2**31 - 1, min_len=1, max_len=64),
        "lengths": between(1, 64, min_len=1, max_len=8),
        "per_class": between(1, 100_000), "noise": one_of("report", "tune"),
        "guidance": between(0, None, lo_open=True), "unseen": one_of(*UNSEEN_SUBSETS),
        "latency_batch": between(1, 4096), "latency_repeats": between(1, 100),
        "samples": between(0, 64), "max_parallel": between(1, 1024),
        "lcha_window": between(0, 1_000_000),
    }

    variants: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    lengths: tuple[int, ...] = (1,)
    per_class: int = 24
    noise: str = "report"  # "tune" for recipe decisions (pipeline/eval.py SEED_BASES)
    guidance: float = 1.0  # classifier-free guidance of the scored students (1: off)
    unseen: str = "all"  # the unseen classes scored: "all", "report" or "validation"
    # LCHA's streaming sums windowed (past chunks, or "trained"), scored and timed so; None: as trained
    lcha_window: int | Literal["trained"] | None = None
    # Per-chunk latency: streams per measured batch (amortises the interpreter's per-op cost,
    # so the seconds are the model's compute on this machine) and passes (median per chunk)
    latency_batch: int = 16
    latency_repeats: int = 3
    samples: int = 0  # prompts rendered to video per variant (its first seed); 0: none
    max_parallel: int = 1  # cells at once (> 1: as Ray tasks)
    # The cells' Ray-task resources: the section's ``ray`` table, parsed as every section's
    # (TaskResources); None: in this process (when max_parallel is 1)
    ray: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        check_config(self)
        if not self.variants:
            raise ConfigError("[compare] needs variants: a table of name = {[train.model] "
                              "overrides}, e.g. s2dit = {} for the run's own model")
        for name, overrides in self.variants.items():
            if not NAME.fullmatch(name):
                raise ConfigError(f"[compare.variants] {name!r}: a variant's name is its folder "
                                  "name: letters, digits, '_' and '-'")
        if len(set(self.seeds)) != len(self.seeds) or len(set(self.lengths)) != len(self.lengths):
            raise ConfigError(f"[compare] seeds and lengths must not repeat, got seeds "
                              f"{list(self.seeds)}, lengths {list(self.lengths)}")
        for name, overrides in self.variants.items():
            _check_variant(name, overrides, self.variants, tuple(self.seeds))

    def seeds_of(self, name: str) -> tuple[int, ...]:
        """The training seeds of variant ``name``: its own ``seeds``, else all of [compare]'s,
        in [compare]'s order."""
        own = self.variants[name].get(VARIANT_SEEDS)
        return tuple(s for s in self.seeds if own is None or s in own)

    @property
    def longest(self) -> int:
        return max(self.lengths)

    def eval_options(self) -> dict[str, Any]:
        """``guidance``, ``unseen`` and ``lcha_window`` as evaluate_checkpoint takes them, each
        only when not at its default (so cells scored before they existed keep their evaluation
        keys)."""
        options = {"guidance": float(self.guidance), "unseen": self.unseen, "lcha_window": self.lcha_window}
        return {k: v for k, v in options.items() if v != _DEFAULTS[k]}

    def model(self, base: dict[str, Any], name: str) -> dict[str, Any]:
        """Variant ``name``'s [train.model] table: the run's ``base`` with its overrides (a
        found variant's without what it finds: matching.py resolves it before cells train)."""
        tables = recipe_tables()
        return {**base, **{k: v for k, v in model_keys(self.variants[name]).items() if k not in tables}}

    def recipe(self, name: str, table: str) -> dict[str, Any]:
        """Variant ``name``'s overrides of the training stage whose table is ``table``."""
        return dict(self.variants[name].get(table, {}))


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(CompareConfig)}
