"""One definition of the cache-generation flags, shared by `s2dit cache generate` and
`python -m teacher_jobs generate` (the entry point for `ray job submit`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Collection
from typing import Any

from cache_schema.codecs import codec_names
from cache_schema.encodings import encoding_names
from cache_schema.store import use_profile
from cache_schema.words import count

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


# [job] key -> (flag, argparse keywords), in --help order; dest is the key. A command that reads
# only some keys (cache audit, cache estimate) asks add_generate_args for those alone.
JOB_FLAG_ARGS: dict[str, tuple[str, dict[str, Any]]] = {
    "prompts": ("--prompts", {"help": "prompt corpus URL: .txt (one per line), .jsonl or .parquet"}),
    "output": ("--output", {"help": "cache URL (folder or s3://bucket/path); rerun the same command "
                                    "to resume"}),
    "encoding": ("--encoding", {"choices": list(encoding_names()), "help": "shard encoding (default wds)"}),
    "codec": ("--codec", {"choices": list(codec_names()),
                          "help": "value codec (default raw): zstd or trajectory (lossless residuals "
                                  "against the solver's prediction), with --encoding zarr"}),
    "samples_per_shard": ("--samples-per-shard", {"type": int, "help": "samples per shard/work unit"}),
    "height": ("--height", {"type": int, "help": "video height in pixels"}),
    "width": ("--width", {"type": int, "help": "video width in pixels"}),
    "frames": ("--frames", {"type": int, "help": "video frames (4k+1)"}),
    "keep_steps": ("--keep-steps", {"help": "stored states: all | every:K | uniform:N | "
                                            "sigma-uniform:N | 0,4,8, or a union joined by +"}),
    "seed": ("--seed", {"type": int, "help": "global seed; noise = f(seed, sample id)"}),
    "seeds_per_prompt": ("--seeds-per-prompt", {"type": int, "help": "trajectories per txt line"}),
    "num_actors": ("--num-actors", {"type": int, "help": "teacher actors (one per GPU on a cluster)"}),
    "num_gpus_per_actor": ("--num-gpus-per-actor", {"type": float, "help": "GPUs per teacher actor"}),
    "gpu_memory_gb": ("--gpu-memory-gb", {"type": float, "help": "memory of one GPU (default 80)"}),
    "gpu": ("--gpu", {"choices": list(GPUS), "help": "GPU type of the job's nodes: the cost estimate "
                                                     "and unit size"}),
    "commit_every": ("--commit-every", {"type": int, "help": "units between intermediate generations"}),
    "device": ("--device", {"help": "torch device of the teacher (cpu, cuda)"}),
    "placement_timeout_s": ("--placement-timeout", {
        "type": float, "help": "seconds an actor may wait for a node with its resources (default 600)"}),
    "load_timeout_s": ("--load-timeout", {
        "type": float, "help": "seconds from placement to a loaded teacher (default 3600)"}),
    "stall_timeout_s": ("--stall-timeout", {
        "type": float, "help": "end the job after this many seconds without progress (default 3600)"}),
    "stall_after_s": ("--stall-after", {
        "type": float, "help": "warn (one line, the status file, a Ray metric) after this many seconds "
                               "without a finished shard (default 5x the median shard time, at least 600)"}),
    "max_init_failures": ("--max-init-failures", {
        "type": int, "help": "teacher loads failing in a row before the job stops (default 3)"}),
    "max_gpu_hours": ("--max-gpu-hours", {
        "type": float, "help": "budget cap over all runs of this output (actor-hours on CPU): the job "
                               "commits and stops when it is reached; rerun with a larger cap to resume"}),
    "ray_address": ("--ray-address", {"help": "Ray cluster address (default: local runtime; 'auto' "
                                              "inside `ray job submit`)"}),
}
JOB_FLAGS = tuple(JOB_FLAG_ARGS)


def add_generate_args(parser: argparse.ArgumentParser, keys: Collection[str] | None = None) -> None:
    """The job's flags: --teacher and every [job.teacher] key, the [job] keys ``keys`` names
    (None: all of them, as `cache generate`), --config and --storage-profile. A [job] key without
    a flag here is still read from --config, --set or (audit) the manifest's recorded config."""
    unknown = set(keys or ()) - set(JOB_FLAGS)
    assert not unknown, f"no generate flag for {sorted(unknown)}"
    add_storage_profile_arg(parser)
    teacher = parser.add_argument_group("teacher ([job.teacher]; every key is a flag)")
    teacher.add_argument("--teacher", help="analytic | wan-tiny | wan:<local dir or hub id> (default "
                                           "analytic); the [job.teacher] kind and source")
    for key, (kind, text) in TEACHER_FLAGS.items():
        teacher.add_argument(f"--{key.replace('_', '-')}", dest=f"teacher_{key}", type=kind, help=text)
    job = parser.add_argument_group("job ([job]; flags override --config)")
    for key, (flag, kwargs) in JOB_FLAG_ARGS.items():
        if keys is None or key in keys:
            job.add_argument(flag, dest=key, **kwargs)
    job.add_argument("--config", help="TOML job config; flags override it")


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
        failed = len(result.failed_units)
        print(f"error: {count(failed, 'unit')} failed: {r['units_failed']}; everything else is "
              f"committed - rerun the same command to retry {'it' if failed == 1 else 'them'}",
              file=sys.stderr)
        return 1
    return 0
