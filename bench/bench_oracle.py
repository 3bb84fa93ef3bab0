"""Calibration of the oracle's gate (issue 24): what the score says of known samplers.

On the memory task (the config of configs/memory.toml) or the motion task, at 1x and 4x the
trained length, every class at PER_CLASS samples on the reporting noise base:
- exact draws from the data, and the exact streaming oracle (whole past);
- the teacher's own Euler at 4, 24 (its configured steps) and 50 steps;
- the degenerate students (0.6 x mode, 0.7/0.3 ghosting, 80/.. skewed modes);
- the exact streaming oracle that sees only the last 8 frames (the sanity students' reach).
Each row: the legacy gate, the new gate (its failed checks) against the teacher's full-step
reference, and the numbers behind them.

    .venv/bin/python bench/bench_oracle.py --task memory --per-class 96
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from teacher_jobs.sampler import sample_latents
from teacher_jobs.teachers.analytic import AnalyticConfig, AnalyticTeacher
from teacher_jobs.teachers.analytic_reference import (
    DEGENERATE_KINDS,
    degenerate_student,
    stream_oracle,
)
from teacher_jobs.teachers.analytic_score import reference_stats_of

MEMORY = {"task": "memory", "latent_shape": (4, 15, 8, 8), "modes_per_class": 1}
SEED_BASE = 1_000_000  # pipeline.eval's reporting base


def rows_for(teacher: AnalyticTeacher, per_class: int) -> list[tuple[str, dict]]:
    prompts = [f"a {c} {o} moving {m}" for (o, c, m) in teacher.classes] * per_class
    seeds = [SEED_BASE + i for i in range(len(prompts))]
    runs = {}
    for steps in (4, teacher.num_steps, 50):
        t = AnalyticTeacher(dataclasses.replace(teacher.config, num_steps=steps))
        runs[steps] = sample_latents(t, prompts, seeds, global_seed=0)
    ref_x0 = runs[teacher.num_steps]
    ref = reference_stats_of(teacher.score(ref_x0, prompts))
    samples = {"data": teacher.sample_true_data(prompts, seed=1),
               "exact streaming oracle": stream_oracle(teacher, prompts, reach=None, seed=1)}
    samples.update({f"teacher Euler {k}-step": x for k, x in runs.items()})
    samples.update({f"degenerate: {kind}": degenerate_student(teacher, prompts, kind) for kind in DEGENERATE_KINDS})
    samples["streaming oracle, reach 8"] = stream_oracle(teacher, prompts, reach=8, seed=1)
    return [(name, teacher.score(x, prompts, reference=ref_x0, reference_stats=ref)) for name, x in samples.items()]


def fmt(name: str, s: dict, length: int) -> str:
    gate = "pass" if s["gate"]["passed"] else "FAIL: " + ", ".join(s["gate"]["failed"])
    recall = f"{s['recall']:.3f} [{s['recall_ci'][0]:.2f}, {s['recall_ci'][1]:.2f}]" if "recall" in s else "-"
    branch = f"{s['branch_rate']:.3f}" if "branch_rate" in s else "-"
    return (f"| {name} | {length}x | {'pass' if s['legacy_gate'] else 'FAIL'} | {gate} | {s['adherence']:.3f} | "
            f"{s['coverage']:.3f} | {s['dispersion_ratio']:.3f} | {s['amplitude_bias']:+.3f} | "
            f"{s['ghost_energy']:.4f} | {s['mode_tv']:.3f} ({s['mode_tv_floor']:.3f}) | {recall} | {branch} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=("memory", "motion"), default="memory")
    parser.add_argument("--per-class", type=int, default=96)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    base = AnalyticConfig(**MEMORY) if args.task == "memory" else AnalyticConfig()
    print("| sampler | length | legacy gate | new gate | adherence | coverage | r | amp. bias | ghost | "
          "mode TV (floor) | recall [95%] | went on |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    start = time.time()
    for m in args.lengths:
        teacher = AnalyticTeacher(base.at_length(base.latent_shape[1] * m))
        for name, s in rows_for(teacher, args.per_class):
            print(fmt(name, s, m), flush=True)
    print(f"\n{args.task} task, {args.per_class} per class, {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
