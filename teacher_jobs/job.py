"""The Ray driver of cache generation: corpus in, versioned cache out, resumable.

0. plan the teacher without weights: fingerprint from its files, layout, memory plan (refused
   when it does not fit gpu_memory_gb)
1. load and validate the corpus; plan deterministic units (one shard each)
2. compare with what the output already holds: skip committed units, refuse a new fingerprint
3. run units on a pool of teacher actors (retry on actor death, bounded)
4. commit intermediate generations every ``commit_every`` units, and a final one
5. write the job report next to the manifests; exit non-zero if any unit failed
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
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
from cache_schema.store import refuse_url_credentials, split_ref, storage_env, use_profile

from .actors import TeacherWorker
from .config import JobConfig
from .corpus import load_corpus, require_entries
from .sampler import cache_fingerprint
from .units import plan_units

REPORT_DIR = "reports"


@dataclass
class JobResult:
    manifest: Manifest | None
    report: dict[str, Any]
    failed_units: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed_units


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


def _wait_placed(ray, actors: list, config: JobConfig) -> None:
    """On a cluster, GPU nodes may still be scaling up: wait for the first actor to start."""
    if config.num_gpus_per_actor <= 0 or not actors:
        return
    ready, _ = ray.wait([actors[0].__ray_ready__.remote()], timeout=config.placement_timeout_s)
    if not ready:
        raise NoGPUActors(
            f"no GPU actors can be placed: none started within {config.placement_timeout_s:g} s "
            f"(each asks for {config.num_gpus_per_actor:g} GPU; the cluster has "
            f"{ray.cluster_resources().get('GPU', 0.0):g}). Check the GPU worker group "
            "(infra/kuberay) or raise placement_timeout_s")


def run_generation(config: JobConfig, *, progress: bool = True) -> JobResult:
    for what, url in (("prompts", config.prompts), ("output", config.output)):
        refuse_url_credentials(url or "", what)  # both are recorded in the manifest and report
    # the storage profile a caller selected ($S2DIT_STORAGE_PROFILE), for driver and actors
    with use_profile(), ExitStack() as lease:
        return _run_generation(config, progress=progress, lease=lease)


def _run_generation(config: JobConfig, *, progress: bool, lease: ExitStack) -> JobResult:
    if not config.prompts or not config.output:
        raise ValueError("a job needs --prompts (corpus URL) and --output (cache URL)")
    started = time.time()
    # 0. the teacher, planned from files (the driver loads no model weights)
    memory = check_memory(config)
    plan = config.teacher.driver_plan(config.video)
    fingerprint = cache_fingerprint(plan.fingerprint, keep_steps=config.keep_step_indices,
                                    global_seed=config.seed, half_dtype=config.half_dtype,
                                    negative_prompt=config.negative_prompt)
    digest = fingerprint_digest(fingerprint)
    # 1. corpus and units
    entries, rejected = load_corpus(config.prompts, seeds_per_prompt=config.seeds_per_prompt,
                                    max_tokens=plan.max_tokens, count_tokens=plan.count_tokens)
    require_entries(entries, rejected, config.prompts)  # before any Ray actor (issue 17)
    units = plan_units(entries, config.samples_per_shard)
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
    previous = existing.extra.get("job", {}) if existing else {}
    unit_rejections: list[dict] = list(previous.get("unit_rejections", []))
    telemetry: list[dict] = list(previous.get("telemetry", []))
    todo = [u for u in units if u.name not in done]
    # held until the final commit, so that gc spares the shards actors write before it
    lease.enter_context(writer_lease(output, what="cache generate"))
    # 3. actors
    ray = _init_ray(config)
    _check_gpus(ray, config)
    # Actors get where the storage is and which profile (non-secret names, as an argument: not
    # runtime_env, which Ray writes to its logs); credentials come from their own environment
    # (inherited from this driver by an embedded runtime, a Kubernetes secret or an instance
    # role on a cluster) or a credentials file whose path is forwarded.
    storage = storage_env()
    remote_cls = ray.remote(num_gpus=config.num_gpus_per_actor, num_cpus=config.num_cpus_per_actor,
                            max_concurrency=2)(TeacherWorker)
    actors = [remote_cls.remote(config, fingerprint, digest, storage)
              for _ in range(min(config.num_actors, max(1, len(todo))))]
    _wait_placed(ray, actors, config)
    pending: dict[Any, tuple[Any, int, Any]] = {}  # ref -> (unit, attempt, actor)
    queue = [(u, 0) for u in todo]
    failed: dict[str, str] = {}
    uncommitted: list[Any] = []
    manifest = existing
    bar = tqdm(total=len(entries), initial=sum(len(u.entries) for u in units if u.name in done),
               unit="sample", desc="teacher cache", disable=not progress)

    def commit(final: bool) -> None:
        nonlocal manifest, uncommitted
        if not uncommitted and not (final and manifest is None and not todo):
            return
        report = {"unit_rejections": unit_rejections, "telemetry": telemetry,
                  "corpus_rejections": [r.to_json() for r in rejected],
                  "failed_units": failed, "final": final}
        manifest = commit_generation(output, shards=uncommitted, layout=layout,
                                     fingerprint=fingerprint, operation="append",
                                     extra={"config": config.to_json(), "job": report})
        uncommitted = []

    def submit(actor_index: int) -> None:
        if not queue:
            return
        unit, attempt = queue.pop(0)
        actor = actors[actor_index]
        pending[actor.run_unit.remote(unit)] = (unit, attempt, actor_index)

    for i in range(len(actors)):
        submit(i)
        submit(i)  # two in flight per actor: compute overlaps upload
    since_commit = 0
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        ref = ready[0]
        unit, attempt, actor_index = pending.pop(ref)
        try:
            result = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError) as exc:
            actors[actor_index] = remote_cls.remote(config, fingerprint, digest, storage)  # replace the dead one
            if attempt < config.max_retries:
                queue.append((unit, attempt + 1))
            else:
                failed[unit.name] = f"actor died {attempt + 1} times: {type(exc).__name__}"
            submit(actor_index)
            continue
        except (ray.exceptions.RayTaskError, ray.exceptions.UnserializableException) as exc:
            # (an error Ray cannot rebuild on the driver arrives as UnserializableException,
            # carrying the actor's traceback: still this unit's failure, not the driver's)
            if attempt < config.max_retries:
                queue.append((unit, attempt + 1))
            else:
                failed[unit.name] = str(exc.cause if hasattr(exc, "cause") else exc)[-500:]
            submit(actor_index)
            continue
        if result["shard"] is not None:
            uncommitted.append(result["shard"])
        unit_rejections.extend(result["rejections"])
        telemetry.append({k: result[k] for k in ("unit", "samples", "teacher_seconds",
                                                 "write_seconds", "bytes", "device")})
        bar.update(len(unit.entries))
        since_commit += 1
        if since_commit >= config.commit_every:
            commit(final=False)
            since_commit = 0
        submit(actor_index)
    bar.close()
    # Free the actors' CPUs/GPUs now, not whenever the garbage collector reaches their handles:
    # a training stage in this process (s2dit run, Ray Train workers) waits for them otherwise.
    for actor in actors:
        ray.kill(actor)
    commit(final=True)
    report = {"output": output, "generation": manifest.generation if manifest else None,
              "samples": manifest.num_samples if manifest else 0,
              "units_total": len(units), "units_skipped": len(units) - len(todo),
              "units_failed": failed, "corpus_rejections": [r.to_json() for r in rejected],
              "prompt_rejections": unit_rejections, "telemetry": telemetry,
              "wall_seconds": time.time() - started, "fingerprint_digest": digest,
              "config": config.to_json(),
              "memory_plan": memory.to_json() if memory is not None else None}
    if manifest is not None:
        store = open_store(output)
        store.put_bytes(f"{REPORT_DIR}/{manifest.generation:06d}.json",
                        json.dumps(report, indent=1, ensure_ascii=False).encode())
    return JobResult(manifest=manifest, report=report, failed_units=sorted(failed))
