"""The cost of one latency measurement of pipeline/compare/matching.py, old against new, on the
memory task's shapes (configs/compare.toml's [train.model] and variants, the cache's latents):
per model, ``latency_repeats`` passes of the whole stream (``chunk_seconds``, every chunk
denoised; the FLOPs counted after a whole stream too) against as many passes of the steady
state only (``steady_chunk_seconds``: the chunks before the last 5 committed undenoised; FLOPs
likewise), the two interleaved pass by pass so that both see the same load. Prints each
path's wall time and its per-chunk latency reading (``last5_s``, the mean of the last 5
chunks' medians over passes) and their ratios, then what resolving the config's matched
variant costs in passes of one model: every candidate and the reference, every pass (old),
against bisection's probes of one pass and one timing of the final pair beside the reference
(new, when noise does not move the pair).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_matching.py --cache runs/memory_causal/cache@train
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import torch

from cache_schema import load_manifest
from pipeline.graph import load_run_config
from pipeline.graph.stages.compare import compare_config
from student_train.model import S2DiT, StudentConfig
from student_train.stages import get_stage
from student_train.streaming_cost import (
    CPU_ATTENTION,
    _stream,
    chunk_flops,
    chunk_seconds,
    clip_chunks,
    steady_chunk_seconds,
    summarise,
)
from student_train.student import StudentCheckpoint
from student_train.trainer import student_config_for


def random_student(model: StudentConfig, steps: int, recipe: dict[str, Any]) -> StudentCheckpoint:
    """A random-weight student as matching.py's ``OnThisMachine.student`` builds it."""
    torch.manual_seed(0)
    sigmas = torch.linspace(1.0, 0.0, steps + 1).tolist()
    return StudentCheckpoint(url="(random weights)", model=S2DiT(model).eval(),
                             state={"plan": {"schedule_sigmas": sigmas}, "config": recipe},
                             spec=get_stage("ar"))


def old_flops(student: StudentCheckpoint, length: int) -> int:
    """``chunk_flops`` as it was: a whole stream denoised, the last chunk counted."""
    from torch.utils.flop_counter import FlopCounterMode

    chunks = _stream(student, length, batch=1)
    for _ in range(clip_chunks(student, length) - 1):
        next(chunks)
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        next(chunks)
    return int(counter.get_total_flops())


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def compare_one(student: StudentCheckpoint, length: int, batch: int, repeats: int) -> dict[str, float]:
    """Old and new measurement of one model, pass by pass interleaved."""
    old, new, old_s, new_s = [], [], 0.0, 0.0
    for _ in range(repeats):
        seconds, wall = timed(chunk_seconds, student, length, batch=batch)
        old.append(seconds)
        old_s += wall
        seconds, wall = timed(steady_chunk_seconds, student, length, batch=batch)
        new.append(seconds)
        new_s += wall
    with torch.no_grad():
        flops_old, wall_old = timed(old_flops, student, length)
        flops_new, wall_new = timed(chunk_flops, student, length)
    assert flops_old == flops_new, (flops_old, flops_new)
    return {"old_s": old_s + wall_old, "new_s": new_s + wall_new, "old_pass_s": old_s / repeats,
            "new_pass_s": new_s / repeats, "old_ms": summarise(old)["last5_s"] * 1e3,
            "new_ms": summarise(new)["last5_s"] * 1e3, "chunks": len(old[0]), "timed": len(new[0])}


def models(run_config: str, cache: str, variant: str, widths: list[int]) -> tuple[dict[str, StudentConfig], Any]:
    """{label: student} of the matched variant's reference and of the variant at ``widths``."""
    config = load_run_config(run_config)
    compare = compare_config(config)
    base = config.section("train")["model"]
    layout = load_manifest(cache).layout
    spec = compare.variants[variant]["match"]
    table = compare.model(base, variant)  # without its match table
    out = {spec["latency_of"]: student_config_for(layout, compare.model(base, spec["latency_of"]), None)}
    for width in widths:
        out[f"{variant} dim {width}"] = student_config_for(layout, {**table, "dim": width}, None)
    return out, (config, compare, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/compare.toml")
    parser.add_argument("--cache", default="runs/memory_causal/cache@train")
    parser.add_argument("--variant", default="full_attention_narrow")
    parser.add_argument("--widths", type=int, nargs="+", default=[96, 128])
    args = parser.parse_args()
    students, (config, compare, spec) = models(args.config, args.cache, args.variant, args.widths)
    steps, recipe = int(config.section("train")["student_steps"]), config.section("train_ar")
    length, batch, repeats = compare.longest, compare.latency_batch, compare.latency_repeats
    chunks = next(iter(students.values())).latent_frames * length  # one-frame chunks
    print(f"torch threads {torch.get_num_threads()}, {length}x ({chunks} chunks), batch {batch}, "
          f"{repeats} passes, {steps} steps + the commit per chunk, guidance {compare.guidance}")
    print(f"{'model':<30} {'old s':>7} {'new s':>7} {'speedup':>7} {'old ms':>7} {'new ms':>7} {'new/old':>7}")
    rows = {}
    for label, model in students.items():
        r = rows[label] = compare_one(random_student(model, steps, recipe), length, batch, repeats)
        print(f"{label:<30} {r['old_s']:7.1f} {r['new_s']:7.1f} {r['old_s'] / r['new_s']:7.1f} "
              f"{r['old_ms']:7.1f} {r['new_ms']:7.1f} {r['new_ms'] / r['old_ms']:7.2f}", flush=True)
    n = len(spec["candidates"])
    old_passes = (1 + n) * repeats
    probes = math.ceil(math.log2(n + 1))
    new_passes = 1 + probes + 3 * repeats  # the reference's first pass, probes, the pair beside it
    old_pass = sum(r["old_pass_s"] for r in rows.values()) / len(rows)
    new_pass = sum(r["new_pass_s"] for r in rows.values()) / len(rows)
    print(f"resolving {args.variant} ({n} candidates): old {old_passes} passes x {old_pass:.1f} s = "
          f"{old_passes * old_pass / 60:.1f} min; new {new_passes} passes x {new_pass:.1f} s = "
          f"{new_passes * new_pass / 60:.1f} min (at most {probes} probes, the pair timed once; "
          f"passes averaged over the models above)")


if __name__ == "__main__":
    main()
