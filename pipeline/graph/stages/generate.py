"""Stage generate: the versioned teacher cache in RUN_DIR/cache (Ray teacher actors).

Reads ``[job]`` (teacher_jobs JobConfig keys; ``[job.teacher]`` the teacher's section); the
corpus and cache paths are the run folder's. Resumable: a rerun after a kill continues from the
last committed generation (the job skips committed units)."""

from __future__ import annotations

import os
from typing import Any

from cache_schema import load_manifest
from cache_schema.words import count
from teacher_jobs.config import JobConfig
from teacher_jobs.job import run_generation

from ..config import RunConfig
from ..registry import register_graph_stage
from ..stage import Stage, StageContext
from ..state_schema import INT, OPT_STR, PATH, STR, optional


def job_config(config: RunConfig, prompts: str, output: str) -> JobConfig:
    section = config.section("job")
    teacher = section.pop("teacher", None)
    return JobConfig.load(None, teacher=teacher, prompts=prompts, output=output, **section)


def _check(config: RunConfig) -> None:
    job_config(config, "RUN_DIR/prompts.txt", "RUN_DIR/cache")


def run(ctx: StageContext) -> dict[str, Any]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    job = run_generation(job_config(ctx.config, ctx.outputs("corpus")["prompts"], ctx.path("cache")),
                         progress=ctx.progress)
    if not job.ok:
        raise RuntimeError(f"cache generation failed for units {job.failed_units}; rerun to retry them")
    manifest = job.manifest
    ctx.console.print(f"cache {ctx.path('cache')} generation {manifest.generation}: "
                      f"{count(manifest.num_samples, 'trajectory', 'trajectories')}, "
                      f"{manifest.total_bytes / 2**20:.1f} MiB in {count(len(manifest.shards), 'shard')}")
    return {"cache": ctx.path("cache"), "generation": manifest.generation,
            "samples": manifest.num_samples, "shards": len(manifest.shards),
            "bytes": manifest.total_bytes, "encoding": manifest.encoding,
            "teacher": manifest.fingerprint.get("teacher"),
            "fingerprint_digest": manifest.fingerprint_digest}


def _present(ctx: StageContext, outputs: dict[str, Any]) -> bool:
    manifest = load_manifest(f"{outputs['cache']}@{outputs['generation']}") if ctx.exists("cache") else None
    return manifest is not None and manifest.fingerprint_digest == outputs["fingerprint_digest"]


# Where and how wide the job runs: the cache's bytes do not depend on these (units and noise
# are functions of the corpus and seed), so changing them does not regenerate it.
EXECUTION_KEYS = ("ray_address", "num_actors", "num_cpus_per_actor", "placement_timeout_s",
                  "max_retries", "load_timeout_s", "stall_timeout_s", "stall_after_s", "max_init_failures",
                  "max_gpu_hours")  # where, how wide and how long: never the cache's content

STAGE = Stage(name="generate", title="the teacher cache (Ray)", section="job", run=run,
              seeded=True, artefact="cache",
              needs=("corpus",), writes=("cache",), still_there=_present, resumable=True,
              volatile=EXECUTION_KEYS, check=_check,
              recorded={"cache": PATH, "generation": INT, "fingerprint_digest": STR,
                        "teacher": optional(OPT_STR)})
register_graph_stage(STAGE, order=20)
