"""One definition of the cache-generation flags, shared by `s2dit cache generate` and
`python -m teacher_jobs generate` (the entry point for `ray job submit`)."""

from __future__ import annotations

import argparse
import json
import sys

from .config import JobConfig


def add_generate_args(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--teacher", help="analytic | wan-tiny | wan:<local dir or hub id> (default analytic)")
    add("--prompts", help="prompt corpus URL: .txt (one per line), .jsonl or .parquet")
    add("--output", help="cache URL (folder or s3://bucket/path); rerun the same command to resume")
    add("--encoding", choices=["wds", "zarr"], help="shard encoding (default wds)")
    add("--samples-per-shard", type=int, dest="samples_per_shard", help="samples per shard/work unit")
    add("--steps", type=int, help="teacher solver steps")
    add("--shift", type=float, help="flow time shift")
    add("--guidance", help="CFG scale, or high,low per expert (e.g. 4.0,3.0)")
    add("--height", type=int, help="video height in pixels (multiple of 16)")
    add("--width", type=int, help="video width in pixels (multiple of 16)")
    add("--frames", type=int, help="video frames (4k+1)")
    add("--keep-steps", dest="keep_steps", help="stored states: all | every:K | uniform:N | 0,4,8")
    add("--seed", type=int, help="global seed; noise = f(seed, sample id)")
    add("--seeds-per-prompt", type=int, dest="seeds_per_prompt", help="trajectories per txt line")
    add("--negative-prompt", dest="negative_prompt", help="negative prompt for CFG")
    add("--num-actors", type=int, dest="num_actors", help="teacher actors (one per GPU on a cluster)")
    add("--num-gpus-per-actor", type=float, dest="num_gpus_per_actor", help="GPUs per teacher actor")
    add("--commit-every", type=int, dest="commit_every", help="units between intermediate generations")
    add("--device", help="torch device of the teacher (cpu, cuda)")
    add("--config", help="TOML job config; flags override it")
    add("--ray-address", dest="ray_address", help="Ray cluster address (default: local runtime; "
                                                  "'auto' inside `ray job submit`)")


def config_from_args(args: argparse.Namespace) -> JobConfig:
    overrides = {k: getattr(args, k, None) for k in (
        "teacher", "prompts", "output", "encoding", "samples_per_shard", "steps", "shift",
        "height", "width", "frames", "keep_steps", "seed", "seeds_per_prompt", "negative_prompt",
        "num_actors", "num_gpus_per_actor", "commit_every", "device", "ray_address")}
    if getattr(args, "guidance", None):
        overrides["guidance"] = tuple(float(g) for g in str(args.guidance).split(","))
    return JobConfig.load(getattr(args, "config", None), **overrides)


def run_generate(args: argparse.Namespace) -> int:
    from .job import run_generation

    try:
        config = config_from_args(args)
        result = run_generation(config)
    except (ValueError, FileNotFoundError) as exc:
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
