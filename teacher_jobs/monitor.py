"""What a platform team watches while the cache job runs: Ray metrics and a stall alert.

The driver keeps the numbers (it sees every finished shard, every per-sample report and every
actor); the job's progress board actor (progress.py) exports them with ``ray.util.metrics``, so
a Prometheus scrape of Ray's metrics endpoint (each node's ``metrics_export_port``, the port
KubeRay's PodMonitor scrapes) sees them as ``ray_s2dit_cache_*``.

Stall alert: no shard finished for ``stall_after_s`` ([job]; default ``STALL_FACTOR`` x the
median measured shard time, at least ``STALL_FLOOR_S``; before the first shard, the plan's
estimate or the floor). It logs one warning line per stall naming the actors without progress
and what to check, and puts it in the job's status file (``reports/status.json`` of the cache),
which the job rewrites at every finished shard and commit. The job goes on: ``stall_timeout_s``
is the hard stop.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

LOG = logging.getLogger("s2dit.cache_job")
STALL_FACTOR = 5.0  # x the median shard time: a slow shard is not a stuck one
STALL_FLOOR_S = 600.0  # never alert sooner: tiny CPU shards take seconds, a reschedule minutes
RATE_WINDOW_S = 120.0  # samples/s over this much recent wall time
PREFIX = "s2dit_cache_"
# name -> (kind, help); counters receive this run's running totals (the board adds the delta)
METRICS: dict[str, tuple[str, str]] = {
    "samples_committed": ("counter", "samples in generations this job committed"),
    "shards_committed": ("counter", "shards in generations this job committed"),
    "units_failed": ("counter", "units that failed after their last retry"),
    "samples_done": ("gauge", "samples finished, with those of running units and earlier runs"),
    "samples_total": ("gauge", "samples the corpus asks for"),
    "samples_per_second": ("gauge", f"samples finished per second over the last {RATE_WINDOW_S:g} s"),
    "gpu_hours": ("gauge", "GPU-hours spent on this output, all runs (actor-hours on CPU)"),
    "stall_after_seconds": ("gauge", "the stall alert's bound"),
    "stalled": ("gauge", "1 while no shard has finished for stall_after_seconds"),
}
ACTOR_AGE = "actor_last_progress_age_seconds"  # per actor: since its last sample or shard


class JobMetrics:
    """The Ray metrics of one job, recorded where they are created (the board actor)."""

    def __init__(self, output: str):
        from ray.util.metrics import Counter, Gauge

        self.tags = {"output": output}
        self.metrics = {name: (Counter if kind == "counter" else Gauge)(
                            PREFIX + name, description=text, tag_keys=("output",))
                        for name, (kind, text) in METRICS.items()}
        self.age = Gauge(PREFIX + ACTOR_AGE, description="seconds since an actor's last sample "
                         "or shard", tag_keys=("output", "actor"))
        self.counted = {name: 0.0 for name, (kind, _) in METRICS.items() if kind == "counter"}
        self.last: dict[str, Any] = {}

    def record(self, snapshot: dict[str, Any]) -> None:
        for name, metric in self.metrics.items():
            value = float(snapshot[name])
            if name in self.counted:  # totals in, increments out: a repeated snapshot adds nothing
                if value > self.counted[name]:
                    metric.inc(value - self.counted[name], tags=self.tags)
                    self.counted[name] = value
            else:
                metric.set(value, tags=self.tags)
        for actor, age in snapshot["actor_age_s"].items():
            self.age.set(float(age), tags={**self.tags, "actor": str(actor)})
        self.last = snapshot


@dataclass
class _Actor:
    index: int
    ray_id: str  # for `ray logs actor --id`
    since: float  # monotonic time of its start or its last progress


@dataclass
class JobMonitor:
    """The driver's side: counts, per-actor progress, the stall bound and its alert."""

    stall_after_s: float | None  # [job] stall_after_s; None: derived
    stall_timeout_s: float
    estimate_s: float | None  # the plan's seconds per shard, before any is measured
    samples_total: int
    shard_seconds: list[float] = field(default_factory=list)  # measured, this run and earlier
    clock: Any = time.monotonic
    actors: dict[int, _Actor] = field(default_factory=dict)
    last_shard: float | None = None  # None until an actor is ready: loading has its own bound
    alert: str | None = None
    alerts: list[str] = field(default_factory=list)  # every alert of this run, for the report
    totals: dict[str, float] = field(default_factory=lambda: {
        "samples_committed": 0, "shards_committed": 0, "units_failed": 0})
    rate: deque = field(default_factory=deque)  # (time, samples done)

    def stall_after(self) -> tuple[float, str]:
        """The bound and where it comes from (said in the alert)."""
        if self.stall_after_s is not None:
            return self.stall_after_s, "configured"
        if self.shard_seconds:
            median = statistics.median(self.shard_seconds)
            basis = f"{STALL_FACTOR:g}x the median shard time {median:.3g} s"
        elif self.estimate_s is not None:
            median, basis = self.estimate_s, f"{STALL_FACTOR:g}x the plan's {self.estimate_s:.3g} s a shard"
        else:
            return STALL_FLOOR_S, "the floor: no shard measured yet"
        bound = max(STALL_FLOOR_S, STALL_FACTOR * median)
        return bound, basis + (f", raised to the {STALL_FLOOR_S:g} s floor" if bound > STALL_FACTOR * median else "")

    def sync_actors(self, ready: dict[int, str]) -> None:
        """The ready actors (slot index -> Ray actor id); a replacement starts its own clock."""
        now = self.clock()
        for index, ray_id in ready.items():
            if index not in self.actors or self.actors[index].ray_id != ray_id:
                self.actors[index] = _Actor(index, ray_id, now)
        for index in [i for i in self.actors if i not in ready]:
            del self.actors[index]  # dead or dropped: its replacement is named once ready
        if ready and self.last_shard is None:
            self.last_shard = now

    def progressed(self, index: int) -> None:
        if index in self.actors:
            self.actors[index].since = self.clock()

    def shard_done(self, index: int, seconds: float) -> None:
        self.shard_seconds.append(seconds)
        self.last_shard = self.clock()
        self.alert = None  # the stall is over: the next one alerts again
        self.progressed(index)

    def count(self, name: str, by: float = 1) -> None:
        self.totals[name] += by

    def check(self, running: dict[int, list[str]]) -> str | None:
        """The alert line when a stall starts (None otherwise, and once per stall); ``running``
        names each actor's units in flight."""
        if self.last_shard is None or self.alert is not None:
            return None
        now = self.clock()
        bound, basis = self.stall_after()
        idle = now - self.last_shard
        if idle < bound:
            return None
        stuck = [a for a in self.actors.values() if now - a.since >= bound]
        if not stuck and idle < 2 * bound:
            # Every actor progressed within the bound (one may have reported just before it
            # hung): wait until one has been quiet for the bound, or the shard is twice late.
            return None
        self.alert = _alert_line(idle, bound, basis, stuck, running, now, self.stall_timeout_s)
        self.alerts.append(self.alert)
        LOG.warning(self.alert)
        return self.alert

    def snapshot(self, samples_done: int, gpu_hours: float) -> dict[str, Any]:
        """What the board exports and the status file holds."""
        now = self.clock()
        self.rate.append((now, samples_done))
        while len(self.rate) > 2 and now - self.rate[1][0] >= RATE_WINDOW_S:
            self.rate.popleft()
        (t0, d0) = self.rate[0]
        bound, basis = self.stall_after()
        return {**self.totals, "samples_done": samples_done, "samples_total": self.samples_total,
                "samples_per_second": (samples_done - d0) / (now - t0) if now > t0 else 0.0,
                "gpu_hours": gpu_hours, "stall_after_seconds": bound, "stall_basis": basis,
                "stalled": int(self.alert is not None), "alert": self.alert,
                "actor_age_s": {a.index: round(now - a.since, 3) for a in self.actors.values()},
                "actor_ids": {a.index: a.ray_id for a in self.actors.values()}}


def _alert_line(idle: float, bound: float, basis: str, stuck: list[_Actor],
                running: dict[int, list[str]], now: float, stall_timeout_s: float) -> str:
    """One line: how long, against what, which actors, what to check."""
    head = f"WARNING cache job stalled: no shard finished for {idle:.0f} s (stall_after_s = {bound:.4g} s: {basis}); "
    if stuck:
        named = "; ".join(f"actor {a.index} (Ray actor {a.ray_id}, last progress {now - a.since:.0f} s "
                          f"ago, running {', '.join(running.get(a.index, [])) or 'nothing'})"
                          for a in stuck)
        ids = " / ".join(a.ray_id for a in stuck)
        what = (f"no progress from {named}. Check `ray logs actor --id {ids}` for a hung teacher "
                "or upload, whether its GPU is busy (nvidia-smi on its node) and whether the "
                "storage endpoint answers")
    else:
        what = ("every ready actor reported samples within that time: shards are slower than "
                "measured, not stuck (raise stall_after_s if this is expected)")
    return (f"{head}{what}; the job goes on and stops after stall_timeout_s = {stall_timeout_s:g} s "
            "with no progress at all")


def write_status(store, path: str, state: str, snapshot: dict[str, Any]) -> None:
    """The job's status file: its state and the snapshot, rewritten whole (never appended)."""
    from cache_schema.redact import redact_secrets

    body = {"state": state, "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **snapshot}
    store.put_bytes(path, json.dumps(redact_secrets(body), indent=1, ensure_ascii=False).encode())
