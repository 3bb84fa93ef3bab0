"""`s2dit cache generate | estimate`: run the teacher job, or size it before launching."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from cache_schema import CAUSAL_GROUP, CacheLayout
from teacher_jobs.cli_args import add_generate_args, config_from_args, run_generate
from teacher_jobs.sizing import job_cost, size_units


def _estimate(args: argparse.Namespace) -> int:
    """Bytes per sample from the driver's weight-free plan, and the per-actor memory plan."""
    import json

    from teacher_jobs.corpus import load_corpus

    _parse_sets(args)
    config = config_from_args(args)
    memory = config.teacher.memory_plan(config.video, gpu_memory_gb=config.gpu_memory_gb)
    layout = CacheLayout(**config.teacher.layout_estimate(config.video),
                         keep_steps=config.keep_step_indices, half_dtype=config.half_dtype)
    # a job with causal_chunk_frames also writes the causal ODE pairs (as large as the states + x0)
    groups = (CAUSAL_GROUP,) if config.teacher.causal_chunk_frames else ()
    per_sample = layout.raw_bytes_per_sample(layout.max_text_len, groups)
    count = None
    if config.prompts and "://" not in config.prompts:
        entries, _ = load_corpus(config.prompts, seeds_per_prompt=config.seeds_per_prompt)
        count = len(entries)
    # Raw half-precision bytes; zstd / trajectory store less (data-dependent: see
    # bench/bench_codec.py), so this is the upper bound a non-raw codec stays under.
    out = {"latent_shape": list(layout.latent_shape), "kept_steps": layout.num_kept,
           "steps": layout.num_steps, "half_dtype": layout.half_dtype, "codec": config.codec,
           "bytes_per_sample": per_sample, "causal_pairs": bool(groups), "samples": count}
    if memory is not None:
        out.update(memory.to_json())
    cost = job_cost(config, memory, args.throughput)
    if cost is not None:  # GPU-hours: one GPU per actor, samples one after another
        out["cost"] = {**cost.to_json(), "gpu_hours": None if count is None else round(cost.gpu_hours(count), 1)}
    # the driver's plan of units and commits (sized from the cost on a GPU job)
    units = size_units(samples_per_shard=config.samples_per_shard, commit_every=config.commit_every,
                       actors=config.num_actors, cost=cost if config.device.startswith("cuda") else None)
    out["units"] = units.to_json()
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for key, value in out.items():
            print(f"{key}: {value}")
    if memory is not None and not memory.fits:
        print(f"error: {memory.advice}", file=sys.stderr)
        return 2
    return 0


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="any [job] key (repeatable; teacher.KEY for [job.teacher]), the value "
                             "read as TOML and checked like the file's, after the file and the "
                             "flags: --set seeds_per_prompt=2 --set teacher.steps=12")


def _parse_sets(args: argparse.Namespace) -> None:
    """``--set`` into ``args.job_sets`` (what config_from_args applies last)."""
    from pipeline.graph.overrides import table_overrides
    from teacher_jobs.config import JobConfig

    args.job_sets = table_overrides(args.overrides, "job", (f.name for f in dataclasses.fields(JobConfig)))


def _generate(args: argparse.Namespace) -> int:
    _parse_sets(args)
    return run_generate(args)


def register(subparsers: argparse._SubParsersAction) -> None:
    gen = subparsers.add_parser(
        "generate", help="run the teacher over a prompt corpus into a versioned cache (Ray)",
        description="Run the teacher over a prompt corpus on Ray actors and write trajectories, "
                    "scores and embeddings to a cache; rerunning the same command resumes.")
    add_generate_args(gen)
    _add_set(gen)
    gen.set_defaults(func=_generate)
    est = subparsers.add_parser("estimate", help="bytes per sample and total for a job config",
                                description="Print the cache size a job config would produce.")
    add_generate_args(est)
    _add_set(est)
    est.add_argument("--json", action="store_true", help="print the plan as JSON")
    est.add_argument("--throughput", type=float, metavar="SECONDS",
                     help="measured seconds per sample on one GPU (instead of the --gpu model)")
    est.set_defaults(func=_estimate)
