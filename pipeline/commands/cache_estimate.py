"""`s2dit cache estimate`: size a cache job before launching it, as tables for people (``--json``:
the same plan for machines): bytes per sample and for the corpus, per-actor memory, compute,
GPU-hours and the driver's work units."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from cache_schema import CAUSAL_GROUP, CacheLayout
from teacher_jobs.cli_args import add_generate_args, config_from_args
from teacher_jobs.sizing import job_cost, size_units

from .cache_generate import add_set, parse_sets
from .output import count, key_values, size

# the [job] keys the plan reads besides the teacher (output, seed, timeouts, budgets and the Ray
# address do not change it)
ESTIMATE_KEYS = ("prompts", "seeds_per_prompt", "encoding", "codec", "height", "width", "frames",
                 "keep_steps", "samples_per_shard", "commit_every", "num_actors", "num_gpus_per_actor",
                 "gpu_memory_gb", "gpu", "device")
RAW_BOUND = ("raw half-precision bytes, what codec raw stores; zstd and trajectory store less "
             "(how much depends on the data: bench/bench_codec.py), so it is their upper bound")


def _samples(config) -> tuple[int | None, str]:
    """The corpus's sample count (None: not counted) and what it is."""
    from teacher_jobs.corpus import load_corpus

    if not config.prompts:
        return None, "no corpus given (--prompts or [job] prompts): no total"
    if "://" in config.prompts:
        return None, (f"not counted: the corpus {config.prompts} is remote (the job counts it when "
                      "it starts); total = size per sample x its samples")
    entries, _ = load_corpus(config.prompts, seeds_per_prompt=config.seeds_per_prompt)
    return len(entries), f"{config.prompts}, {count(config.seeds_per_prompt, 'seed')} a prompt"


def plan(args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    """The plan as JSON-ready values, and the memory plan (None: negligible)."""
    config = config_from_args(args)
    memory = config.teacher.memory_plan(config.video, gpu_memory_gb=config.gpu_memory_gb)
    layout = CacheLayout(**config.teacher.layout_estimate(config.video),
                         keep_steps=config.keep_step_indices, half_dtype=config.half_dtype)
    # a job with causal_chunk_frames also writes the causal ODE pairs (as large as the states + x0)
    groups = (CAUSAL_GROUP,) if config.teacher.causal_chunk_frames else ()
    per_sample = layout.raw_bytes_per_sample(layout.max_text_len, groups)
    samples, corpus = _samples(config)
    out = {"latent_shape": list(layout.latent_shape), "kept_steps": layout.num_kept,
           "steps": layout.num_steps, "half_dtype": layout.half_dtype, "codec": config.codec,
           "bytes_per_sample": per_sample, "causal_pairs": bool(groups), "samples": samples,
           "corpus": corpus, "total_bytes": None if samples is None else samples * per_sample,
           "bytes_are": RAW_BOUND}
    if memory is not None:
        out.update(memory.to_json())
    cost = job_cost(config, memory, args.throughput)
    if cost is not None:  # GPU-hours: one GPU per actor, samples one after another
        hours = None if samples is None else round(cost.gpu_hours(samples), 1)
        out["cost"] = {**cost.to_json(), "gpu_hours": hours}
    # the driver's plan of units and commits (sized from the cost on a GPU job)
    units = size_units(samples_per_shard=config.samples_per_shard, commit_every=config.commit_every,
                       actors=config.num_actors, cost=cost if config.device.startswith("cuda") else None)
    out["units"] = units.to_json()
    return out, memory


def _cache_rows(out: dict[str, Any]) -> list[tuple[str, str]]:
    shape = " x ".join(str(n) for n in out["latent_shape"])
    codec = out["codec"] or "raw"
    per_sample = size(out["bytes_per_sample"]) + ("" if codec == "raw" else f" (raw; {codec} stores less)")
    samples = out["corpus"] if out["samples"] is None else f"{out['samples']:,} ({out['corpus']})"
    total = "-" if out["total_bytes"] is None else size(out["total_bytes"])
    return [("latent (C x F x H x W)", shape),
            ("stored states", f"{out['kept_steps']} of {count(out['steps'], 'step')}, {out['half_dtype']}"),
            ("causal pairs", "yes" if out["causal_pairs"] else "no"), ("codec", codec),
            ("size per sample", per_sample), ("samples", samples), ("total", total)]


def _memory_rows(out: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [(name, f"{size(c['bytes'])} {c['dtype']}, "
                   + ("on the GPU at peak" if c["on_gpu_at_peak"] else "offloaded at peak"))
            for name, c in out["components"].items()]
    verdict = "fits" if out["fits"] else "does NOT fit"
    rows += [("activations", f"{out['activations_gb']:.1f} GB"),
             ("GPU peak", f"{out['peak_gb_per_actor']:.1f} GB of {out['gpu_memory_gb']:g} GB: {verdict}"),
             ("host memory", f"{out['host_gb_per_actor']:.1f} GB"),
             ("offload", (f"{out['offload']}, micro-batch {out['micro_batch']}, "
                         f"{out['swap_gb_per_sample']:.1f} GB moved a sample"))]
    return rows


def _compute_rows(out: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("tokens a sample", f"{out['tokens_per_sample']:,}"),
            ("one forward", f"{out['flops_per_forward'] / 1e15:.2f} PFLOP"),
            ("a trajectory", (f"{out['flops_per_trajectory'] / 1e15:.1f} PFLOP (self-attention "
                             f"{out['attention_flops_per_trajectory'] / 1e15:.1f})"))]
    cost = out.get("cost")
    if cost:
        hours = "-" if cost["gpu_hours"] is None else f"{cost['gpu_hours']:,.1f}"
        rows += [("time a sample", f"{cost['seconds_per_sample']:g} s on one {cost['gpu']} ({cost['basis']})"),
                 ("GPU-hours", f"{cost['gpu_hours_per_10k']:,.1f} per 10k samples; the corpus: {hours}")]
    return rows


def tables(out: dict[str, Any]) -> list[Table]:
    """The plan for people: the cache, then (GPU teachers) memory per actor and compute, then
    the driver's units; notes as captions."""
    units = out["units"]
    unit = (f"{count(units['samples_per_shard'], 'sample')} a unit (shard), a commit every "
            f"{count(units['commit_every'], 'unit')}")
    if units.get("seconds_per_unit") is not None:
        unit += f", {units['seconds_per_unit'] / 60:.1f} GPU-minutes a unit"
    cache = key_values("cache", _cache_rows(out))
    cache.caption = f"sizes are {out['bytes_are']}"
    grids = [cache]
    if "components" in out:
        memory = key_values("memory per actor", _memory_rows(out))
        if out.get("advice"):
            memory.caption = out["advice"]
        grids += [memory, key_values("compute", _compute_rows(out))]
    work = key_values("work units", [("units", unit), ("why", units["basis"])])
    if out.get("assumptions"):
        work.caption = "assumptions: " + "; ".join(out["assumptions"])
    return [*grids, work]


def _estimate(args: argparse.Namespace) -> int:
    parse_sets(args)
    out, memory = plan(args)
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        console = Console()
        for index, grid in enumerate(tables(out)):
            if index:
                console.print()
            console.print(grid)
    if memory is not None and not memory.fits:
        print(f"error: {memory.advice}", file=sys.stderr)
        return 2
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    est = subparsers.add_parser(
        "estimate", help="bytes per sample and total for a job config",
        description="Print the cache size a job config would produce (per sample and for its "
                    "corpus), and for a GPU teacher the memory per actor, FLOPs and GPU-hours. "
                    "Exit 2 when an actor would not fit its GPU (naming the knob to turn).")
    add_generate_args(est, ESTIMATE_KEYS)
    add_set(est)
    est.add_argument("--json", action="store_true", help="print the plan as JSON")
    est.add_argument("--throughput", type=float, metavar="SECONDS",
                     help="measured seconds per sample on one GPU (instead of the --gpu model)")
    est.set_defaults(func=_estimate)
