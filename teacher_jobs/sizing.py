"""How big a work unit is, and how often the driver commits, from what a sample costs.

A unit is one shard, produced by one actor and lost whole when that actor is preempted; until a
commit names it, it is also what a reader cannot see yet (a driver death no longer loses it:
the next run adopts it, cache_schema/adopt.py). Fixed sizes tuned for the CPU teachers are hours
on a GPU (32 A14B samples at 480P are 7 A100-hours, issue 27), so a GPU job with a cost estimate
gets units of at most ``UNIT_TARGET_S`` of GPU time and a commit about every
``COMMIT_INTERVAL_S`` of wall time over its actors. Explicit ``samples_per_shard`` and
``commit_every`` win; without an estimate the CPU defaults apply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from cache_schema.words import count

from .gpus import CostEstimate

UNIT_TARGET_S = 15 * 60.0  # GPU time one unit may hold: what a preemption of its actor loses
COMMIT_INTERVAL_S = 15 * 60.0  # wall time between commits on a GPU job
DEFAULT_SAMPLES_PER_SHARD = 64  # CPU jobs, and GPU jobs without an estimate
DEFAULT_COMMIT_EVERY = 8


@dataclass(frozen=True, kw_only=True, slots=True)
class UnitPlan:
    samples_per_shard: int
    commit_every: int  # units between intermediate generations
    seconds_per_unit: float | None  # one unit on one GPU, when a sample's cost is known
    basis: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        text = (f"units of {count(self.samples_per_shard, 'sample')}, a commit every "
                f"{count(self.commit_every, 'unit')}")
        if self.seconds_per_unit is not None:
            text += f" ({self.seconds_per_unit / 60:.1f} GPU-minutes a unit)"
        return f"{text}: {self.basis}"


def job_cost(config, memory, throughput: float | None = None) -> CostEstimate | None:
    """Seconds per sample of the job on one GPU: measured (``throughput``), else the teacher's
    model for ``config.gpu`` (a memory plan with ``cost``); None when neither is known."""
    if throughput is not None:
        return CostEstimate(gpu=config.gpu or "measured", seconds_per_sample=throughput,
                            basis="measured: --throughput")
    if config.gpu is None or memory is None or not hasattr(memory, "cost"):
        return None
    return memory.cost(config.gpu)


def size_units(*, samples_per_shard: int | None, commit_every: int | None, actors: int,
               cost: CostEstimate | None) -> UnitPlan:
    """Explicit values as given; the rest from the cost (or the CPU defaults without one)."""
    if cost is None:
        return UnitPlan(samples_per_shard=samples_per_shard or DEFAULT_SAMPLES_PER_SHARD,
                        commit_every=commit_every or DEFAULT_COMMIT_EVERY, seconds_per_unit=None,
                        basis="fixed sizes (no GPU cost estimate: set [job] gpu)")
    per_shard = samples_per_shard or max(1, int(UNIT_TARGET_S // cost.seconds_per_sample))
    unit_s = per_shard * cost.seconds_per_sample
    # units finish at about actors / unit_s a second: a commit every COMMIT_INTERVAL_S of wall time
    every = commit_every or max(1, round(COMMIT_INTERVAL_S * actors / unit_s))
    chosen = [k for k, v in (("samples_per_shard", samples_per_shard),
                             ("commit_every", commit_every)) if v is None]
    basis = (f"{', '.join(chosen)} sized for <= {UNIT_TARGET_S / 60:g} GPU-minutes a unit and a "
             f"commit every ~{COMMIT_INTERVAL_S / 60:g} minutes" if chosen else "as configured")
    return UnitPlan(samples_per_shard=per_shard, commit_every=every, seconds_per_unit=unit_s,
                    basis=f"{basis}; {cost.seconds_per_sample:.0f} s a sample on {cost.gpu} "
                          f"({cost.basis.split(':')[0]})")
