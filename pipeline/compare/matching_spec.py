"""What a found variant asks for: a knob matched to another variant's latency, or a layout
searched under it (resolved by matching.py before any cell trains).

    [compare.variants]
    s2dit = {}
    # the dim (or the number of blocks) whose per-chunk latency is closest to s2dit's
    narrow = {layout = ["ssa:1", "ssa:1"], match = {latency_of = "s2dit", over = "dim"}}
    # the DP's best layout (student_train/search) under s2dit's per-chunk latency
    searched = {search = {latency_of = "s2dit", max_blocks = 4}}

A variant has at most one of ``match`` and ``search``; it may not set the key they find (``dim``
or ``layout``), and the variant it is measured against must be an ordinary one (no chains).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from cache_schema.typed_config import ConfigError, Limits, between, check_values, one_of

KNOBS = {"dim": "dim", "blocks": "layout"}  # what `over` names -> the [train.model] key it sets


@dataclass(kw_only=True, slots=True)
class MatchSpec:
    TABLE: ClassVar[str] = "match"
    LIMITS: ClassVar[Limits] = {"over": one_of(*KNOBS), "tolerance": between(0.0, 1.0),
                                "candidates": between(1, 65_536, min_len=1, max_len=64)}

    latency_of: str  # the variant whose per-chunk latency this one matches
    over: str = "dim"  # "dim" (width) or "blocks" (depth of a one-kind layout)
    # May exceed the reference's latency by this fraction (timings on a loaded machine are noisy)
    tolerance: float = 0.05
    # Values of the knob to measure (None: every valid one from half to twice the variant's own)
    candidates: tuple[int, ...] | None = None


@dataclass(kw_only=True, slots=True)
class SearchSpec:
    TABLE: ClassVar[str] = "search"
    LIMITS: ClassVar[Limits] = {"max_blocks": between(1, 32), "min_blocks": between(1, 32)}

    latency_of: str  # the variant whose per-chunk latency is the budget
    max_blocks: int
    min_blocks: int | None = None  # None: max_blocks (a fixed depth)
    sandwich: bool = True  # LCHA top slice, SSA filling, LCHA bottom slice (search/dp.py)
    # Quality proxy per block option (None: search/profile.py default_score, a placeholder)
    scores: dict[str, float] = field(default_factory=dict)


SPECS: dict[str, type] = {"match": MatchSpec, "search": SearchSpec}  # variant key -> its table


def found_spec(name: str, overrides: dict[str, Any]) -> MatchSpec | SearchSpec | None:
    """The variant's ``match`` or ``search`` table as its spec (None when it has neither);
    a bad table is one ConfigError naming the variant and the key."""
    keys = [k for k in SPECS if k in overrides]
    if not keys:
        return None
    where = f"compare.variants.{name}"
    if len(keys) > 1:
        raise ConfigError(f"[{where}] has both 'match' and 'search': a variant is found one way")
    key = keys[0]
    values, cls = overrides[key], SPECS[key]
    check_values(cls, values, f"{where}.{key}")
    required = {"match": ("latency_of",), "search": ("latency_of", "max_blocks")}[key]
    missing = [k for k in required if k not in values]
    if missing:
        raise ConfigError(f"[{where}.{key}] needs {', '.join(map(repr, missing))}")
    spec = cls(**values)
    found_key = KNOBS[spec.over] if isinstance(spec, MatchSpec) else "layout"
    if found_key in overrides and not (isinstance(spec, MatchSpec) and spec.over == "blocks"):
        raise ConfigError(f"[{where}] sets {found_key!r} and {key} finds it: drop one")
    if isinstance(spec, SearchSpec) and spec.min_blocks is not None and spec.min_blocks > spec.max_blocks:
        raise ConfigError(f"[{where}.search] min_blocks {spec.min_blocks} > max_blocks {spec.max_blocks}")
    if isinstance(spec, MatchSpec) and spec.over == "blocks" and len(set(overrides.get("layout", ()))) > 1:
        raise ConfigError(f"[{where}.match] over = 'blocks' repeats one block kind: the layout "
                          f"{list(overrides['layout'])} has several")
    return spec


def check_reference(name: str, spec: MatchSpec | SearchSpec, variants: dict[str, Any]) -> None:
    """``latency_of`` names another, ordinary variant of the grid."""
    where = f"compare.variants.{name}.{spec.TABLE}"
    ref = spec.latency_of
    if ref == name or ref not in variants:
        others = sorted(v for v in variants if v != name)
        raise ConfigError(f"[{where}] latency_of {ref!r} is not another variant of the grid; "
                          f"variants: {', '.join(others)}")
    if isinstance(variants[ref], dict) and any(k in variants[ref] for k in SPECS):
        raise ConfigError(f"[{where}] latency_of {ref!r} is itself matched or searched: measure "
                          "against an ordinary variant")


VARIANT_SEEDS = "seeds"  # a variant's own training seeds (config.py), not a [train.model] key


def model_keys(overrides: dict[str, Any]) -> dict[str, Any]:
    """A variant's table without its ``match`` / ``search`` table and its own ``seeds``."""
    return {k: v for k, v in overrides.items() if k not in SPECS and k != VARIANT_SEEDS}
