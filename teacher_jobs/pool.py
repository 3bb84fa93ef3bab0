"""The pool of teacher actors: placement, loading, replacement, and what they cost.

Each slot holds one actor going through three phases, each bounded:

    created --(placed: a node had its resources; placement_timeout_s)--> placed
            --(teacher loaded and checked; load_timeout_s)--> ready (runs units)

A dead actor is replaced once, whichever of its in-flight units reports the death first (a
slot remembers which actor it holds). A load that fails, dies or overruns is an init failure;
``max_init_failures`` of them in a row stop the job with the last cause, instead of starting
yet another load of the same broken teacher. GPU-hours are counted per actor from placement
to its end, which is what a cluster bills.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .actors import TeacherWorker
from .config import JobConfig


class JobStopped(RuntimeError):
    """The job ended early, after committing what was finished; ``result`` is its JobResult
    (set by the driver once the report is written)."""

    result: Any = None


class ActorsNotPlaced(JobStopped):
    """No teacher actor could be placed within placement_timeout_s."""


class TeacherLoadFailed(JobStopped):
    """Teacher loads failed max_init_failures times in a row."""


class JobStalled(JobStopped):
    """Nothing happened for stall_timeout_s."""


def actor_options(config: JobConfig) -> dict[str, Any]:
    """Ray options of one teacher actor (two tasks at once: compute overlaps upload)."""
    return {"num_gpus": config.num_gpus_per_actor, "num_cpus": config.num_cpus_per_actor,
            "max_concurrency": 2}


@dataclass(eq=False)
class Slot:
    index: int
    handle: Any
    created: float
    ready_ref: Any  # __ray_ready__: resolves once placed and constructed (light)
    load_ref: Any = None
    placed: float | None = None
    loaded: float | None = None
    ended: float | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def phase(self) -> str:
        if self.ended is not None:
            return "ended"
        return "ready" if self.loaded else "loading" if self.placed else "placing"


class ActorPool:
    def __init__(self, ray, config: JobConfig, load_args: tuple, progress: Any, size: int,
                 clock=time.monotonic):
        self.ray, self.config, self.load_args, self.clock = ray, config, load_args, clock
        self.progress = progress
        self.worker = ray.remote(TeacherWorker)
        self.slots: list[Slot] = []
        self.ended: list[Slot] = []  # replaced, dropped or failed actors (their hours count)
        self.init_failures = 0  # in a row
        self.events: list[dict[str, Any]] = []  # for the job report
        for index in range(size):
            self.slots.append(self._spawn(index))

    def _spawn(self, index: int) -> Slot:
        options = actor_options(self.config)
        handle = self.worker.options(**options).remote(self.progress)
        return Slot(index, handle, self.clock(), handle.__ray_ready__.remote(), options=options)

    # -- what the driver waits on ----------------------------------------------------------
    def refs(self) -> list:
        return [s.ready_ref if s.phase == "placing" else s.load_ref
                for s in self.slots if s.phase in ("placing", "loading")]

    def ready(self) -> list[Slot]:
        return [s for s in self.slots if s.phase == "ready"]

    def loading(self) -> bool:
        return any(s.phase == "loading" for s in self.slots)

    def on_ref(self, ref) -> None:
        """A placement or a load finished (or failed): start the load, or mark the slot ready."""
        slot = next((s for s in self.slots if s.phase != "ended" and ref in (s.ready_ref, s.load_ref)),
                    None)
        if slot is None:  # its actor was ended meanwhile
            return
        try:
            info = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:  # the load raised or the actor died
            self._init_failed(slot, _cause(self.ray, exc))
            return
        now = self.clock()
        if ref == slot.ready_ref:
            slot.placed = now
            slot.load_ref = slot.handle.load.remote(*self.load_args)
            return
        slot.loaded = now
        self.init_failures = 0
        self.events.append({"actor": slot.index, "placed_s": round(slot.placed - slot.created, 3),
                            "load_s": round(now - slot.placed, 3), **info})

    # -- failures ----------------------------------------------------------------------------
    def died(self, slot: Slot, cause: str) -> None:
        """An actor died under a unit: replace it, once per actor."""
        if slot.ended is None:
            self.events.append({"actor": slot.index, "died": cause[-300:]})
            self._replace(slot)

    def _init_failed(self, slot: Slot, cause: str) -> None:
        self.init_failures += 1
        self.events.append({"actor": slot.index, "init_failed": cause[-300:]})
        if self.init_failures >= self.config.max_init_failures:
            self._end(slot)
            raise TeacherLoadFailed(
                f"{self.init_failures} teacher actors in a row failed to start "
                f"(max_init_failures = {self.config.max_init_failures}); the last: {cause}")
        self._replace(slot)

    def _replace(self, slot: Slot) -> None:
        self._end(slot)
        self.slots[slot.index] = self._spawn(slot.index)

    def _end(self, slot: Slot) -> None:
        if slot.ended is None:
            slot.ended = self.clock()
            self.ended.append(slot)
            self.ray.kill(slot.handle)  # a no-op on a dead actor; frees a stuck one's resources

    def check_timeouts(self) -> None:
        """Placement and load deadlines. An unplaced actor is dropped while another one is
        placed; when none is, the job cannot run and stops."""
        now, cfg = self.clock(), self.config
        for slot in list(self.slots):
            if slot.phase == "loading" and now - slot.placed > cfg.load_timeout_s:
                self._init_failed(slot, f"the teacher did not load within load_timeout_s = "
                                        f"{cfg.load_timeout_s:g} s")
            elif slot.phase == "placing" and now - slot.created > cfg.placement_timeout_s:
                if any(s.placed is not None and s.phase != "ended" for s in self.slots):
                    self.events.append({"actor": slot.index, "dropped": "not placed within "
                                        f"placement_timeout_s = {cfg.placement_timeout_s:g} s"})
                    self._end(slot)
                    continue
                raise ActorsNotPlaced(f"no teacher actor could be placed within "
                                      f"placement_timeout_s = {cfg.placement_timeout_s:g} s: "
                                      f"{self.describe_waiting()}")

    def describe_waiting(self) -> str:
        have = self.ray.cluster_resources()
        waiting = [s for s in self.slots if s.phase == "placing"]
        if not waiting:
            return "no actor is waiting to be placed"
        asks = {k: v for k, v in waiting[0].options.items() if k != "max_concurrency"}
        return (f"{len(waiting)} actor(s) waiting to be placed, each asking for {asks}; the "
                f"cluster has {({k: v for k, v in have.items() if not k.startswith('node:')})}. "
                "Check the worker group (infra/kuberay) or the actor's resources")

    # -- cost and shutdown -----------------------------------------------------------------
    def gpu_hours(self) -> float:
        """GPUs x hours since placement, over every actor of this run (actor-hours on CPU)."""
        now = self.clock()
        per_actor = self.config.num_gpus_per_actor or 1.0
        seconds = sum((s.ended or now) - s.placed for s in self._all() if s.placed is not None)
        return per_actor * seconds / 3600.0

    def actors_started(self) -> int:
        return len(self._all())

    def _all(self) -> list[Slot]:
        return [*self.ended, *(s for s in self.slots if s.ended is None)]

    def shutdown(self) -> None:
        for slot in self.slots:
            self._end(slot)


def _cause(ray, exc: BaseException) -> str:
    """The reason an actor task failed, as short as it stays clear."""
    cause = getattr(exc, "cause", None)
    if isinstance(exc, ray.exceptions.RayTaskError) and cause is not None:
        return f"{type(cause).__name__}: {cause}"[-1000:]
    return f"{type(exc).__name__}: {exc}"[-1000:]
