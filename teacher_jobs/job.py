"""The Ray driver of cache generation: corpus in, versioned cache out, resumable.

0. plan the teacher without weights: fingerprint from its files, layout, memory plan (refused
   when it does not fit gpu_memory_gb)
1. load and validate the corpus; plan deterministic units (one shard each)
2. compare with what the output already holds: skip committed units, refuse a new fingerprint;
   adopt shards a killed run wrote but never committed, after a deep verify (cache_schema.adopt)
3. run units on a pool of teacher actors (pool.py: placement and load timeouts, one
   replacement per dead actor, fail fast on repeated init failures), retrying units a bounded
   number of times, with per-sample progress (progress.py), Ray metrics and a stall alert
   (monitor.py: reports/status.json), a stall timeout and a budget cap
4. commit intermediate generations every ``commit_every`` units (units and cadence sized from
   the GPU cost estimate unless configured: sizing.py), and a final one (also when the
   job stops early: stall, init failures, budget)
5. write the job report next to the manifests; exit non-zero if any unit failed
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from cache_schema import (
    FingerprintMismatch,
    Manifest,
    commit_generation,
    diff_fingerprints,
    fingerprint_digest,
    load_manifest,
    open_store,
    writer_lease,
)
from cache_schema.adopt import Adoption, drop_receipts, find_adoptable
from cache_schema.errors import StoreError
from cache_schema.redact import redact_secrets
from cache_schema.sample_id import make_sample_id, normalise_prompt
from cache_schema.store import refuse_url_credentials, split_ref, storage_env, use_profile
from cache_schema.words import count

from .config import JobConfig
from .corpus import RejectedEntry, load_corpus, require_entries
from .monitor import JobMonitor, write_status
from .pool import ActorPool, JobStalled, JobStopped, Slot
from .progress import ProgressBoard, ProgressView
from .prompts import decode_prompt
from .sampler import cache_fingerprint
from .sizing import UnitPlan, job_cost, size_units
from .units import Unit, plan_units

REPORT_DIR = "reports"
STATUS_FILE = f"{REPORT_DIR}/status.json"  # rewritten while the job runs (monitor.py)


@dataclass
class JobResult:
    manifest: Manifest | None
    report: dict[str, Any]
    failed_units: list[str] = field(default_factory=list)
    stopped: str | None = None  # why the job ended before its last unit

    @property
    def ok(self) -> bool:
        return not self.failed_units and not self.stopped


class BudgetReached(JobStopped):
    """max_gpu_hours is spent; what was finished is committed."""


def _init_ray(config: JobConfig):
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        if config.ray_address:
            ray.init(address=config.ray_address, log_to_driver=False)
        else:
            ray.init(num_cpus=max(2, config.num_actors), include_dashboard=False,
                     log_to_driver=False)
    return ray


class NoGPUActors(RuntimeError):
    """The cluster cannot place a GPU teacher actor."""


def check_memory(config: JobConfig):
    """The teacher's per-actor memory plan (None for teachers without one); refuses a plan
    that does not fit ``gpu_memory_gb`` on a GPU job, naming the knob to turn."""
    plan = config.teacher.memory_plan(config.video, gpu_memory_gb=config.gpu_memory_gb)
    if plan is not None and config.device.startswith("cuda") and not plan.fits:
        raise ValueError(f"teacher memory plan does not fit: {plan.advice} "
                         "(see `s2dit cache estimate` with the same flags)")
    return plan


def _check_gpus(ray, config: JobConfig) -> None:
    """An embedded runtime never gains GPUs: say so before asking for actors it cannot place."""
    if config.num_gpus_per_actor <= 0:
        return
    have = ray.cluster_resources().get("GPU", 0.0)
    if config.ray_address is None and have < config.num_gpus_per_actor:
        raise NoGPUActors(
            f"no GPU actors can be placed: each teacher actor asks for {config.num_gpus_per_actor:g} "
            f"GPU (device = {config.device!r}) but this local Ray runtime has {have:g}. Submit to a "
            "cluster with GPU workers (--ray-address, infra/kuberay/rayjob.yaml), or run on CPU "
            "with --device cpu --num-gpus-per-actor 0")


def run_generation(config: JobConfig, *, progress: bool = True) -> JobResult:
    for what, url in (("prompts", config.prompts), ("output", config.output)):
        refuse_url_credentials(url or "", what)  # both are recorded in the manifest and report
    # the storage profile a caller selected ($S2DIT_STORAGE_PROFILE), for driver and actors
    with use_profile(), ExitStack() as lease:
        return _run_generation(config, progress=progress, lease=lease)


POLL_S = 1.0  # the main wait wakes at least this often: deadlines, budget, progress


@dataclass
class _Plan:
    """Steps 0-2: what this run has to do, decided before any actor starts."""

    fingerprint: dict[str, Any]
    digest: str
    memory: Any
    layout: Any
    output: str
    existing: Manifest | None
    entries: list
    rejected: list[RejectedEntry]
    units: list[Unit]
    todo: list[Unit]
    sizing: UnitPlan
    adopted: Adoption = field(default_factory=Adoption)

    @property
    def previous(self) -> dict[str, Any]:
        """The job report of the last committed generation (resume carries it on)."""
        return self.existing.extra.get("job", {}) if self.existing else {}


def _plan(config: JobConfig) -> _Plan:
    if not config.prompts or not config.output:
        raise ValueError("a job needs --prompts (corpus URL) and --output (cache URL)")
    # 0. the teacher, planned from files (the driver loads no model weights)
    memory = check_memory(config)
    plan = config.teacher.driver_plan(config.video)
    fingerprint = cache_fingerprint(plan.fingerprint, keep_steps=config.keep_step_indices,
                                    global_seed=config.seed, half_dtype=config.half_dtype,
                                    negative_prompt=config.negative_prompt)
    # 1. corpus and units
    entries, rejected = load_corpus(config.prompts, seeds_per_prompt=config.seeds_per_prompt,
                                    max_tokens=plan.max_tokens, count_tokens=plan.count_tokens)
    require_entries(entries, rejected, config.prompts)  # before any Ray actor (issue 17)
    sizing = size_units(samples_per_shard=config.samples_per_shard, commit_every=config.commit_every,
                        actors=config.num_actors,
                        cost=job_cost(config, memory) if config.device.startswith("cuda") else None)
    units = plan_units(entries, sizing.samples_per_shard)
    layout = dataclasses.replace(plan.layout(config.keep_step_indices, config.half_dtype),
                                 codec=config.codec)
    # 2. resume: what is committed already
    output = split_ref(config.output)[0]
    existing = load_manifest(output)
    if existing is not None and existing.fingerprint != fingerprint:
        diff = "\n  ".join(diff_fingerprints(existing.fingerprint, fingerprint))
        raise FingerprintMismatch(
            f"{output} already holds a cache with another fingerprint; write to a new --output "
            f"URL instead of mixing them. Differences (cache -> this job):\n  {diff}")
    done = {s.name for s in existing.shards} if existing else set()
    digest = fingerprint_digest(fingerprint)
    todo = [u for u in units if u.name not in done]
    adopted = find_adoptable(open_store(output), layout=layout, fingerprint_digest=digest,
                             wanted={u.name: _sample_ids(u, digest) for u in todo})
    taken = {s.name for s in adopted.shards}
    return _Plan(fingerprint=fingerprint, digest=digest, memory=memory, layout=layout,
                 output=output, existing=existing, entries=entries, rejected=rejected,
                 units=units, todo=[u for u in todo if u.name not in taken], sizing=sizing,
                 adopted=adopted)


def _sample_ids(unit: Unit, digest: str) -> list[str]:
    """The sample ids a unit's shard holds, in order, as the sampler derives them (entries it
    would reject are skipped by the check: a shard lacks them, never reorders them)."""
    ids = []
    for entry in unit.entries:
        text, _ = decode_prompt(entry.prompt)
        if text is not None:
            ids.append(make_sample_id(normalise_prompt(text), int(entry.seed), digest))
    return ids


def _run_generation(config: JobConfig, *, progress: bool, lease: ExitStack) -> JobResult:
    started = time.time()
    plan = _plan(config)
    if plan.existing is not None and not plan.todo and not plan.adopted.shards:
        return _nothing_to_do(config, plan, progress, started)
    if progress:
        print(f"cache generate: {plan.sizing.describe()}", file=sys.stderr)
    # Shards exist before a manifest names them: the lease tells `gc` they are not orphans.
    lease.enter_context(writer_lease(plan.output, what="cache generate"))
    run = _Run(config, plan, progress)
    try:
        run.execute()
    except JobStopped as exc:
        exc.result = run.finish(stopped=f"{type(exc).__name__}: {exc}")
        raise
    except BaseException:
        run.release()
        raise
    return run.finish(stopped=None)


def _nothing_to_do(config: JobConfig, plan: _Plan, progress: bool, started: float) -> JobResult:
    """Every unit of the corpus is committed already: say what is there and return before any
    lease, Ray runtime or write (the last real run's report stays the generation's report)."""
    manifest, previous = plan.existing, plan.previous
    units = len(plan.units)
    if progress:
        print(f"cache generate: nothing to do: {plan.output} generation {manifest.generation} "
              f"already holds all {_count(units, 'unit')} of this corpus "
              f"({_count(manifest.num_samples, 'sample')} in {_count(len(manifest.shards), 'shard')}"
              f", fingerprint {plan.digest[:12]}); Ray was not started. More prompts or seeds add "
              "units; `s2dit cache ls` lists the generations", file=sys.stderr)
    report = {"output": plan.output, "generation": manifest.generation,
              "samples": manifest.num_samples, "units_total": units, "units_skipped": units,
              "units_adopted": [], "units_failed": {}, "stopped": None, "nothing_to_do": True,
              "corpus_rejections": [r.to_json() for r in plan.rejected],
              "prompt_rejections": previous.get("unit_rejections", []),
              "gpu_hours": _previous_hours(plan), "actors_started": 0,
              "wall_seconds": time.time() - started, "fingerprint_digest": plan.digest,
              "config": config.to_json()}
    return JobResult(manifest=manifest, report=redact_secrets(report))


class _Run:
    """Step 3-5 of one run: the units of ``plan.todo`` on a pool of teacher actors."""

    def __init__(self, config: JobConfig, plan: _Plan, progress: bool):
        self.config, self.plan, self.started = config, plan, time.time()
        previous = plan.previous
        self.unit_rejections: list[dict] = list(previous.get("unit_rejections", []))
        self.telemetry: list[dict] = list(previous.get("telemetry", []))
        self.previous_hours = _previous_hours(plan)
        self.failed: dict[str, str] = {}
        # shards a killed run wrote and this one verified: committed before any actor starts
        self.uncommitted: list[Any] = list(plan.adopted.shards)
        for extra in plan.adopted.extra.values():
            self.unit_rejections.extend(extra.get("rejections", []))
            self.telemetry.append({**{k: extra.get(k) for k in ("unit", "samples", "teacher_seconds",
                                                               "write_seconds", "bytes", "device")},
                                   "adopted": True})
        self.manifest = plan.existing
        self.queue: list[tuple[Unit, int]] = [(u, 0) for u in plan.todo]
        self.pending: dict[Any, tuple[Unit, int, Slot]] = {}  # ref -> (unit, attempt, slot)
        self.since_commit = 0
        self.ray = self.pool = self.board = self.view = None
        done = sum(len(u.entries) for u in plan.units) - sum(len(u.entries) for u in plan.todo)
        self.bar = tqdm(total=len(plan.entries), initial=done, unit="sample",
                        desc="teacher cache", disable=not progress)
        self.monitor = JobMonitor(
            stall_after_s=config.stall_after_s, stall_timeout_s=config.stall_timeout_s,
            estimate_s=plan.sizing.seconds_per_unit, samples_total=len(plan.entries),
            shard_seconds=[t["teacher_seconds"] + t["write_seconds"] for t in self.telemetry
                           if t.get("teacher_seconds") is not None and t.get("write_seconds") is not None])

    def gpu_hours(self) -> float:
        return self.previous_hours + (self.pool.gpu_hours() if self.pool else 0.0)

    def execute(self) -> None:
        if self.uncommitted:
            self._commit(final=False)  # adopted work is safe before anything can fail
        if not self.queue:
            return
        self._check_budget()  # a cap already spent by earlier runs starts no actor
        self.ray = ray = _init_ray(self.config)
        _check_gpus(ray, self.config)
        # Actors get where the storage is and which profile (non-secret names, as an argument:
        # not runtime_env, which Ray writes to its logs); credentials come from their own
        # environment (inherited from this driver by an embedded runtime, a Kubernetes secret or
        # an instance role on a cluster) or a credentials file whose path is forwarded.
        self.board = ray.remote(num_cpus=0)(ProgressBoard).options(
            scheduling_strategy=_on_this_node(ray)).remote(self.plan.output)  # and the metrics
        self.view = ProgressView(ray, self.board, self.bar)
        load_args = (self.config, self.plan.fingerprint, self.plan.digest, storage_env())
        self.pool = ActorPool(ray, self.config, load_args, self.board,
                              size=min(self.config.num_actors, len(self.queue)))
        self._loop()

    def _loop(self) -> None:
        ray, pool = self.ray, self.pool
        last_activity = last_poll = time.monotonic()
        while self.queue or self.pending:
            waits = [*self.pending, *pool.refs()]
            ready = ray.wait(waits, num_returns=1, timeout=POLL_S)[0] if waits else []
            if not waits:
                time.sleep(POLL_S)
            active = bool(ready)
            for ref in ready:
                if ref in self.pending:
                    self._on_unit(ref)
                else:
                    pool.on_ref(ref)
            self._fill()
            now = time.monotonic()
            if now - last_poll >= POLL_S / 2:
                active |= self._watch()
                last_poll = now
            pool.check_timeouts()
            self._check_budget()
            # a loading actor is bounded by load_timeout_s, and reports nothing until it is done
            if active or pool.loading():
                last_activity = now
            elif now - last_activity > self.config.stall_timeout_s:
                raise JobStalled(
                    f"the job stalled: nothing happened for {now - last_activity:.0f} s "
                    f"(stall_timeout_s = {self.config.stall_timeout_s:g}): no sample done, no unit "
                    f"finished, no actor placed or loaded; {len(self.queue) + len(self.pending)} "
                    f"units left; {pool.describe_waiting()}")

    def _watch(self) -> bool:
        """Per-sample progress, the stall alert and the metrics; True if a sample was reported."""
        slots = {_key(u, a): slot.index for u, a, slot in self.pending.values()}
        news = self.view.poll(set(slots))
        # the actor id is what `ray logs actor --id` takes
        self.monitor.sync_actors({s.index: s.handle._actor_id.hex() for s in self.pool.ready()})
        for key in news:
            self.monitor.progressed(slots[key])
        running: dict[int, list[str]] = {}
        for unit, attempt, slot in self.pending.values():
            running.setdefault(slot.index, []).append(
                f"{unit.name} ({self.view.partial.get(_key(unit, attempt), 0)} of "
                f"{count(len(unit.entries), 'sample')})")
        if self.monitor.check(running):
            self._status("stalled")
        self.board.publish.remote(self._snapshot())  # fire and forget
        return bool(news)

    def _snapshot(self) -> dict[str, Any]:
        done = self.view.shown if self.view is not None else self.bar.n
        return self.monitor.snapshot(done, self.gpu_hours())

    def _status(self, state: str) -> None:
        """The status file; a storage hiccup here never stops the job (the next write fixes it)."""
        try:
            write_status(open_store(self.plan.output), STATUS_FILE, state, self._snapshot())
        except (OSError, StoreError) as exc:
            print(f"cache generate: could not write {STATUS_FILE}: {exc}", file=sys.stderr)

    def _fill(self) -> None:
        """Two units in flight per ready actor: compute overlaps upload."""
        busy = Counter(slot.index for _, _, slot in self.pending.values() if slot.phase == "ready")
        for slot in self.pool.ready():
            for _ in range(2 - busy[slot.index]):
                if not self.queue:
                    return
                unit, attempt = self.queue.pop(0)
                ref = slot.handle.run_unit.remote(unit, _key(unit, attempt))
                self.pending[ref] = (unit, attempt, slot)

    def _on_unit(self, ref) -> None:
        ray = self.ray
        unit, attempt, slot = self.pending.pop(ref)
        self.view.drop(_key(unit, attempt))
        try:
            result = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError) as exc:
            self.pool.died(slot, f"{type(exc).__name__}: {exc}")  # once per actor
            self._retry(unit, attempt, f"actor died {attempt + 1} times: {type(exc).__name__}")
            return
        except (ray.exceptions.RayTaskError, ray.exceptions.UnserializableException) as exc:
            # (an error Ray cannot rebuild on the driver arrives as UnserializableException,
            # carrying the actor's traceback: still this unit's failure, not the driver's)
            self._retry(unit, attempt, str(exc.cause if hasattr(exc, "cause") else exc)[-500:])
            return
        if result["shard"] is not None:
            self.uncommitted.append(result["shard"])
        self.unit_rejections.extend(result["rejections"])
        self.telemetry.append({k: result[k] for k in ("unit", "samples", "teacher_seconds",
                                                      "write_seconds", "bytes", "device")})
        self.view.unit_done(_key(unit, attempt), len(unit.entries))
        self.monitor.shard_done(slot.index, result["teacher_seconds"] + result["write_seconds"])
        self.since_commit += 1
        if self.since_commit >= self.plan.sizing.commit_every:
            self._commit(final=False)
        else:
            self._status("running")

    def _retry(self, unit: Unit, attempt: int, reason: str) -> None:
        if attempt < self.config.max_retries:
            self.queue.append((unit, attempt + 1))
        else:
            self.failed[unit.name] = reason
            self.monitor.count("units_failed")

    def _check_budget(self) -> None:
        cap = self.config.max_gpu_hours
        if cap is not None and self.gpu_hours() >= cap:
            raise BudgetReached(
                f"budget cap reached: {self.gpu_hours():.4g} GPU-hours spent on this output "
                f"(GPUs x time since placement, all runs; actor-hours on CPU) of max_gpu_hours = "
                f"{cap:g}; what was finished is committed. Rerun with a larger max_gpu_hours to "
                "resume")

    def _commit(self, final: bool, stopped: str | None = None) -> None:
        self.since_commit = 0
        if not self.uncommitted and not (final and self.manifest is None and not self.plan.todo):
            return
        report = {"unit_rejections": self.unit_rejections, "telemetry": self.telemetry,
                  "corpus_rejections": [r.to_json() for r in self.plan.rejected],
                  "failed_units": self.failed, "final": final, "stopped": stopped,
                  "gpu_hours": self.gpu_hours()}
        self.manifest = commit_generation(self.plan.output, shards=self.uncommitted,
                                          layout=self.plan.layout,
                                          fingerprint=self.plan.fingerprint, operation="append",
                                          extra={"config": self.config.to_json(), "job": report})
        drop_receipts(open_store(self.plan.output), self.uncommitted)  # adopted or not, named now
        self.monitor.count("shards_committed", len(self.uncommitted))
        self.monitor.count("samples_committed", sum(s.samples for s in self.uncommitted))
        self.uncommitted = []
        if not final:
            self._status("running")

    def release(self) -> None:
        """Free the actors' CPUs/GPUs now, not whenever the garbage collector reaches their
        handles: a training stage in this process (s2dit run, Ray Train workers) waits for them
        otherwise."""
        self.bar.close()
        if self.pool is not None:
            self.pool.shutdown()
        if self.board is not None:
            self.ray.kill(self.board)
            self.board = None

    def finish(self, stopped: str | None) -> JobResult:
        self.release()
        self._commit(final=True, stopped=stopped)
        plan, pool, manifest = self.plan, self.pool, self.manifest
        report = {"output": plan.output, "generation": manifest.generation if manifest else None,
                  "samples": manifest.num_samples if manifest else 0,
                  "units_total": len(plan.units), "unit_plan": plan.sizing.to_json(),
                  "units_skipped": len(plan.units) - len(plan.todo) - len(plan.adopted.shards),
                  "units_adopted": sorted(s.name for s in plan.adopted.shards),
                  "orphans_not_adopted": plan.adopted.rejected,
                  "units_failed": self.failed, "stopped": stopped,
                  "corpus_rejections": [r.to_json() for r in plan.rejected],
                  "prompt_rejections": self.unit_rejections, "telemetry": self.telemetry,
                  "gpu_hours": self.gpu_hours(),
                  "actors_started": pool.actors_started() if pool else 0,
                  "actor_events": pool.events if pool else [],
                  "stall_alerts": self.monitor.alerts,
                  "wall_seconds": time.time() - self.started, "fingerprint_digest": plan.digest,
                  "config": self.config.to_json(),
                  "memory_plan": plan.memory.to_json() if plan.memory is not None else None}
        report = redact_secrets(report)  # recorded and printed: never a credential
        if manifest is not None:
            store = open_store(plan.output)
            store.put_bytes(f"{REPORT_DIR}/{manifest.generation:06d}.json",
                            json.dumps(report, indent=1, ensure_ascii=False).encode())
            self._status("stopped" if stopped else "finished")
        return JobResult(manifest=manifest, report=report, failed_units=sorted(self.failed),
                         stopped=stopped)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _previous_hours(plan: _Plan) -> float:
    """GPU-hours of earlier runs of this output: the last commit's count, or the report its run
    wrote at its end (later: it includes the time after that commit) when there is one."""
    if plan.existing is None:
        return 0.0
    hours = float(plan.previous.get("gpu_hours", 0.0))
    try:
        data = open_store(plan.output).read_bytes(f"{REPORT_DIR}/{plan.existing.generation:06d}.json")
        return max(hours, float(json.loads(data).get("gpu_hours", 0.0)))
    except (FileNotFoundError, ValueError, TypeError, AttributeError):
        return hours  # no report (a killed driver) or an unreadable one


def _on_this_node(ray):
    """Driver-side helpers live on the driver's node: a zero-CPU actor may otherwise be placed
    on a worker node, and losing that node would end the job (its teacher actors are replaced)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)


def _key(unit: Unit, attempt: int) -> str:
    """A unit attempt's progress key: a retried unit starts again from zero."""
    return f"{unit.name}#{attempt}"
