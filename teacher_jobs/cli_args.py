"""One definition of the cache-generation flags, shared by `s2dit cache generate` and
`python -m teacher_jobs generate` (the entry point for `ray job submit`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cache_schema.codecs import codec_names
from cache_schema.encodings import encoding_names
from cache_schema.store import use_profile

from .config import JobConfig
from .gpus import GPUS

TEACHER_FLAGS = {  # [job.teacher] key -> (type, help); every teacher key is a flag
    "source": (str, "teacher weights: local diffusers folder or hub id"),
    "revision": (str, "hub commit (or branch/tag, pinned to its commit) of the teacher weights"),
    "staged": (str, ("copy of the weights made by `s2dit teacher stage` (URL or shared folder): "
                     "actors load only from it, at --revision (a commit sha); '' loads from source")),
    "dtype": (str, "teacher compute dtype: bfloat16 (Wan default) | float16 | float32"),
    "vae_dtype": (str, "VAE dtype (default float32, as WanPipeline)"),
    "solver": (str, "auto (the checkpoint's own scheduler) | euler | unipc"),
    "steps": (int, "teacher solver steps"),
    "shift": (float, "flow time shift"),
    "guidance": (str, "CFG scale, or high,low per expert (e.g. 4.0,3.0)"),
    "boundary": (float, "expert switch as a ratio of the training timesteps (default: checkpoint's)"),
    "negative_prompt": (str, "negative prompt for CFG (Wan default: the official Wan 2.2 one)"),
    "offload": (str, "none | expert (one expert on the GPU at a time) | model (one model on the GPU at a time)"),
    "micro_batch": (int, "samples sharing one solver loop (a sample's bytes do not depend on it: Wan runs its networks one sample per call)"),
    "attention_backend": (str, "diffusers attention backend, e.g. flash, _native_cudnn"),
    "max_text_len": (int, "text encoder sequence length"),
    "sigma_grid": (str, "diffusers (WanPipeline's, default) | official (Wan's generate.py: linspace(0.999, 0))"),
}


def add_storage_profile_arg(parser: argparse.ArgumentParser) -> None:
    """``--storage-profile NAME`` (once per parser): the storage profile every URL of the
    command is opened with; chosen per run, so never written into a manifest or config."""
    if "--storage-profile" in parser._option_string_actions:
        return
    parser.add_argument("--storage-profile", dest="storage_profile", metavar="NAME",
                        help="named storage profile (fsspec options such as an S3 endpoint) from "
                             "$S2DIT_STORAGE_PROFILES or ~/.config/s2dit/storage.toml; default "
                             "$S2DIT_STORAGE_PROFILE, else none")


def add_generate_args(parser: argparse.ArgumentParser) -> None:
    add_storage_profile_arg(parser)
    add = parser.add_argument
    add("--teacher", help="analytic | wan-tiny | wan:<local dir or hub id> (default analytic); "
                          "the [job.teacher] kind and source")
    for key, (kind, text) in TEACHER_FLAGS.items():
        add(f"--{key.replace('_', '-')}", dest=f"teacher_{key}", type=kind, help=text)
    add("--prompts", help="prompt corpus URL: .txt (one per line), .jsonl or .parquet")
    add("--output", help="cache URL (folder or s3://bucket/path); rerun the same command to resume")
    add("--encoding", choices=list(encoding_names()), help="shard encoding (default wds)")
    add("--codec", choices=list(codec_names()),
        help="value codec (default raw): zstd or trajectory (lossless residuals against the "
             "solver's prediction), with --encoding zarr")
    add("--samples-per-shard", type=int, dest="samples_per_shard", help="samples per shard/work unit")
    add("--height", type=int, help="video height in pixels")
    add("--width", type=int, help="video width in pixels")
    add("--frames", type=int, help="video frames (4k+1)")
    add("--keep-steps", dest="keep_steps",
        help="stored states: all | every:K | uniform:N | sigma-uniform:N | 0,4,8, or a union joined by +")
    add("--seed", type=int, help="global seed; noise = f(seed, sample id)")
    add("--seeds-per-prompt", type=int, dest="seeds_per_prompt", help="trajectories per txt line")
    add("--num-actors", type=int, dest="num_actors", help="teacher actors (one per GPU on a cluster)")
    add("--num-gpus-per-actor", type=float, dest="num_gpus_per_actor", help="GPUs per teacher actor")
    add("--gpu-memory-gb", type=float, dest="gpu_memory_gb", help="memory of one GPU (default 80)")
    add("--gpu", choices=list(GPUS), help="GPU type of the job's nodes: the cost estimate and unit size")
    add("--commit-every", type=int, dest="commit_every", help="units between intermediate generations")
    add("--device", help="torch device of the teacher (cpu, cuda)")
    add("--placement-timeout", type=float, dest="placement_timeout_s",
        help="seconds an actor may wait for a node with its resources (default 600)")
    add("--load-timeout", type=float, dest="load_timeout_s",
        help="seconds from placement to a loaded teacher (default 3600)")
    add("--stall-timeout", type=float, dest="stall_timeout_s",
        help="end the job after this many seconds without progress (default 3600)")
    add("--stall-after", type=float, dest="stall_after_s",
        help="warn (one line, the status file, a Ray metric) after this many seconds without a "
             "finished shard (default 5x the median shard time, at least 600)")
    add("--max-init-failures", type=int, dest="max_init_failures",
        help="teacher loads failing in a row before the job stops (default 3)")
    add("--max-gpu-hours", type=float, dest="max_gpu_hours",
        help="budget cap over all runs of this output (actor-hours on CPU): the job commits "
             "and stops when it is reached; rerun with a larger cap to resume")
    add("--config", help="TOML job config; flags override it")
    add("--ray-address", dest="ray_address", help="Ray cluster address (default: local runtime; "
                                                  "'auto' inside `ray job submit`)")


JOB_FLAGS = ("prompts", "output", "encoding", "codec", "samples_per_shard", "height", "width", "frames",
             "keep_steps", "seed", "seeds_per_prompt", "num_actors", "num_gpus_per_actor",
             "gpu_memory_gb", "gpu", "commit_every", "device", "ray_address", "placement_timeout_s",
             "load_timeout_s", "stall_timeout_s", "stall_after_s", "max_init_failures", "max_gpu_hours")


def config_from_args(args: argparse.Namespace) -> JobConfig:
    return JobConfig.load(getattr(args, "config", None), **flag_settings(args))


def flag_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The job settings the flags (and --set) give, as ``JobConfig.load`` keywords: ``teacher``
    (section overrides, ``spec`` for --teacher) and job keys (None: not given)."""
    overrides = {k: getattr(args, k, None) for k in JOB_FLAGS}
    teacher = {k: getattr(args, f"teacher_{k}", None) for k in TEACHER_FLAGS}
    teacher["spec"] = getattr(args, "teacher", None)
    if teacher["guidance"]:
        teacher["guidance"] = tuple(float(g) for g in str(teacher["guidance"]).split(","))
    # --set KEY=VALUE, parsed by the command (s2dit cache generate): after the file and flags
    sets = dict(getattr(args, "job_sets", None) or {})
    section = sets.pop("teacher", {})
    teacher.update({"spec": section} if isinstance(section, str) else section)
    return {"teacher": teacher, **overrides, **sets}


def run_generate(args: argparse.Namespace) -> int:
    from .job import run_generation

    try:
        with use_profile(getattr(args, "storage_profile", None)):
            config = config_from_args(args)  # (a config file may itself live behind the profile)
            result = run_generation(config)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # typed cache errors carry their own explanation
        if type(exc).__module__.startswith("cache_schema"):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
    r = result.report
    print(json.dumps({"output": r["output"], "generation": r["generation"], "samples": r["samples"],
                      "units_total": r["units_total"], "units_skipped": r["units_skipped"],
                      "rejected": len(r["corpus_rejections"]) + len(r["prompt_rejections"]),
                      "failed_units": r["units_failed"], "wall_seconds": round(r["wall_seconds"], 2)},
                     indent=1))
    if not result.ok:
        print(f"error: {len(result.failed_units)} units failed: {r['units_failed']}; everything "
              "else is committed - rerun the same command to retry them", file=sys.stderr)
        return 1
    return 0
