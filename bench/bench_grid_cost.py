"""The compare grid's students resolved and costed on this machine, none trained (issue 26).

Builds configs/compare.toml's grid on a cache (its [train] / [train_ar] recipes and variants),
resolves the found variants as `s2dit run configs/compare.toml` does before any cell trains
(pipeline/compare/matching.py: latency-matched widths, the DP-searched layout; writes
OUT/matching.json, which a grid run with the same question then reuses), names the twins
(variants whose students equal an earlier one's: trained once), then times every distinct
model's per-chunk latency at each length in one run, interleaved pass by pass (random weights:
the cost does not depend on them), with GFLOPs per chunk, and prints each as a multiple of the
reference's (the grid's first variant). Variants that differ from another only in a training
recipe share its model and its row. On an idle machine, one thread:

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_grid_cost.py --cache runs/memory_causal/cache@train
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from cache_schema import load_manifest
from pipeline.compare.grid import Grid, Training, twin_variants
from pipeline.compare.matching import OnThisMachine, _base, _few_steps, _student, resolved_grid
from pipeline.graph import load_run_config
from pipeline.graph.stages.compare import compare_config
from pipeline.graph.stages.train_ar import ar_config
from pipeline.graph.stages.train_kd import train_config
from student_train.stages import get_stage


def grid_of(config_path: str, cache: str, out: str, repeats: int | None) -> Grid:
    config = load_run_config(config_path)
    compare = compare_config(config)
    if compare is None:
        raise SystemExit(f"error: {config_path} has no [compare] section: pass a grid's run config "
                         "(configs/compare.toml)")
    if repeats:
        compare = dataclasses.replace(compare, latency_repeats=repeats)
    trainings = (Training(get_stage("kd"), train_config(config)), Training(get_stage("ar"), ar_config(config)))
    return Grid(compare=compare, trainings=trainings, cache_url=cache, generation=0, out=out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/compare.toml", help="a run config with [compare]")
    parser.add_argument("--cache", default="runs/memory_causal/cache@train", help="the grid's cache (CACHE@TAG)")
    parser.add_argument("--out", default="runs/grid_cost", help="where matching.json and costs.json go")
    parser.add_argument("--repeats", type=int, help="timed passes per model (default: [compare] latency_repeats)")
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    grid = resolved_grid(grid_of(args.config, args.cache, args.out, args.repeats))
    twins = twin_variants(grid)
    layout = load_manifest(args.cache).layout
    models: dict[str, list[str]] = {}  # model JSON -> the variants that train it
    configs, apart = {}, []
    chunk = grid.configs(next(iter(grid.compare.variants)), grid.compare.seeds[0])[-1].chunk_frames
    for name in grid.compare.variants:
        if name in twins:
            continue
        if grid.configs(name, grid.compare.seeds[0])[-1].chunk_frames != chunk:
            apart.append(name)  # another chunk size: a cost per chunk of its own, not comparable
            continue
        student = _student(grid, layout, name, grid.compare.model(_base(grid), name))
        key = json.dumps(student.to_json(), sort_keys=True)
        models.setdefault(key, []).append(name)
        configs[key] = student
    c, last = grid.compare, grid.trainings[-1]
    labels = [names[0] for names in models.values()]
    print(f"torch threads {torch.get_num_threads()}; batch {c.latency_batch}, {c.latency_repeats} passes, "
          f"random weights; twins (trained once): {twins or 'none'}; not timed (another chunk size "
          f"than the reference's, {chunk or 'its model'}'s latent frames): {apart or 'none'}")
    rows = {}
    for m in c.lengths:
        machine = OnThisMachine(length=m, batch=c.latency_batch, repeats=c.latency_repeats,
                                steps=_few_steps(grid), spec=last.spec, recipe=last.config.to_json(),
                                guidance=c.guidance)
        costs = machine.costs(list(configs.values()), labels=labels, what=f"the grid's models at {m}x")
        rows[f"{m}x"] = {label: cost.to_json() for label, cost in zip(labels, costs, strict=True)}
    reference = labels[0]
    print("\n| model (variants that train it) | layout | dim | SSA window | "
          + " | ".join(f"ms {m} | / {reference}" for m in rows) + " | GFLOPs per chunk " + list(rows)[-1] + " |")
    print("|---|---|---|---|" + "---|---|" * len(rows) + "---|")
    for (key, names), label in zip(models.items(), labels, strict=True):
        student = configs[key]
        cells = " | ".join(f"{rows[m][label]['ms']:.1f} | {rows[m][label]['ms'] / rows[m][reference]['ms']:.2f}"
                           for m in rows)
        window = "unbounded" if student.ssa_window is None else f"{student.ssa_window}" + (" + sink" if student.ssa_sink else "")
        print(f"| {', '.join(names)} | {' / '.join(student.layout)} | {student.dim} | {window} | {cells} | "
              f"{rows[list(rows)[-1]][label]['gflops']:.4f} |")
    (Path(args.out) / "costs.json").write_text(json.dumps(
        {"models": {label: names for label, names in zip(labels, models.values(), strict=True)},
         "twins": twins, "not_timed": apart, "threads": torch.get_num_threads(), "costs": rows}, indent=2))


if __name__ == "__main__":
    main()
