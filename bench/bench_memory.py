"""The memory-task quality bench (issue 24): S2DiT and the sanity students, several seeds.

Every student is trained by the same two stages (S2DiT-KD, then S2DiT-AR) from the same cache
with the same recipe as `configs/memory.toml`; only `[train.model]` differs. The sanity students
cannot see the identity across the 9-frame gap (their stacked reach is at most 8 frames,
tests/student_train/test_model_s2dit.py checks it), so each must fail recall; if one passes,
the task is broken.

    .venv/bin/s2dit run configs/memory.toml                      # the cache (and S2DiT, seed 0)
    .venv/bin/python bench/bench_memory.py --cache runs/memory/cache@train \\
        --students s2dit per_frame prev_frame conv_only ssa_short --seeds 0 1 2

Writes OUT/<student>/seed<k>/{kd,ar} checkpoints, eval_kd.json, eval_ar.json, and OUT/table.md
(every metric with its 95% Wilson interval). Reporting noise only: recipes are never chosen here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
import tomllib
from pathlib import Path
from typing import Any

STUDENTS: dict[str, dict[str, Any]] = {
    "s2dit": {},  # the layout of configs/memory.toml
    "per_frame": {"layout": ("ssa:1",) * 4, "ssa_window": 0},
    "prev_frame": {"layout": ("conv", "ssa:1", "ssa:1", "ssa:1"), "conv_kernel": (2, 3, 3), "ssa_window": 0},
    "conv_only": {"layout": ("conv",) * 4},
    "ssa_short": {"layout": ("ssa:1",) * 4, "ssa_window": 2},
}
# Issue 26's variants (full attention, other layouts, stage-2 ablations) by their names in
# this file's [compare.variants]: the same overrides `s2dit run configs/compare.toml` trains,
# here in the bench's table, one process per core.
VARIANTS_FILE = Path(__file__).resolve().parent.parent / "configs" / "compare.toml"
RECIPE_TABLES = ("train", "train_ar")


FOUND_BY_THE_GRID = ("match", "search")  # measured by pipeline/compare/matching.py, not here


def compare_variants() -> dict[str, dict[str, Any]]:
    """The variants whose architecture is written out (a latency-matched or DP-searched one is
    found by `s2dit run configs/compare.toml`, in RUN/compare/matching.json)."""
    variants = tomllib.loads(VARIANTS_FILE.read_text())["compare"]["variants"]
    return {name: v for name, v in variants.items() if not set(v) & set(FOUND_BY_THE_GRID)}


def overrides_of(name: str) -> dict[str, Any]:
    """A student's overrides: {"model": [train.model] keys, "train": ..., "train_ar": ...}."""
    variant = STUDENTS[name] if name in STUDENTS else compare_variants()[name]
    return {"model": {k: v for k, v in variant.items() if k not in (*RECIPE_TABLES, "seeds")},
            **{table: variant.get(table, {}) for table in RECIPE_TABLES}}
ROWS = (("held_out_seeds", "student_4step", "KD 4-step"),
        ("held_out_seeds", "student_fullstep_grid", "KD full-step"),
        ("held_out_seeds", "student_ar_4step_streaming", "AR streaming 1x"),
        ("held_out_seeds", "student_ar_4step_streaming_2x", "AR streaming 2x"),
        ("held_out_seeds", "student_ar_4step_streaming_4x", "AR streaming 4x"))


def _configs(run_config: str, seed: int, overrides: dict[str, Any], kd_steps: int | None,
             ar_steps: int | None):
    from pipeline.graph import load_run_config
    from pipeline.graph.stages.train_ar import ar_config
    from pipeline.graph.stages.train_kd import train_config

    config = load_run_config(run_config)
    kd, ar = train_config(config), ar_config(config)
    kd = dataclasses.replace(kd, **overrides["train"], seed=seed,
                             model={**kd.model, **overrides["model"]},
                             **({"steps": kd_steps} if kd_steps else {}))
    ar = dataclasses.replace(ar, **overrides["train_ar"], seed=seed,
                             **({"causal_steps": ar_steps} if ar_steps else {}))
    return kd, ar, config.section("eval")


def row_name(name: str, args: argparse.Namespace) -> str:
    """A student's row and folder: ``name``, or ``name+lcha`` scored with LCHA's sums windowed."""
    return name if args.lcha_window is None else f"{name}+lcha"


def train_and_score(name: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from pipeline.eval import evaluate_checkpoint, save_report
    from student_train.launch import launch
    from student_train.streaming_cost import chunk_costs  # seconds per streamed chunk

    out = Path(args.out) / row_name(name, args) / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    if args.scored_from:
        return rescore(name, seed, args, out)
    overrides = overrides_of(name)
    kd_cfg, ar_cfg, eval_section = _configs(args.config, seed, overrides, args.kd_steps, args.ar_steps)
    # --kd-from: stage 2 starts from another bench's S2DiT-KD of the same student and seed (e.g.
    # one trained on the same teacher's cache without causal pairs), whose scores are reused.
    # A stage-2 ablation (no model or KD override) starts from s2dit's own KD model.
    kd_name = "s2dit" if not overrides["model"] and not overrides["train"] else name
    kd_dir = Path(args.kd_from) / kd_name / f"seed{seed}" / "kd" if args.kd_from else out / "kd"
    t0 = time.time()
    kd = None if args.kd_from else launch("kd", kd_cfg, out_url=str(kd_dir), cache_url=args.cache,
                                          progress=False)
    t1 = time.time()
    ar = launch("ar", ar_cfg, out_url=str(out / "ar"), init_url=str(kd_dir), cache_url=args.cache,
                progress=False)
    t2 = time.time()
    per_class = args.per_class or eval_section.get("per_class", 96)
    lengths = tuple(args.lengths or eval_section.get("lengths", [1]))
    reports = {}
    reused_kd = kd_dir.parent / "eval_kd.json"
    if args.kd_from and reused_kd.exists():
        reports["kd"] = json.loads(reused_kd.read_text())
        save_report(reports["kd"], str(out / "eval_kd.json"))
    # its figures are the streaming rows
    ar_kwargs = {"lengths": lengths, "whole_clip": False, "lcha_window": args.lcha_window}
    for stage, done, folder, kwargs in (("kd", kd, kd_dir, {}), ("ar", ar, out / "ar", ar_kwargs)):
        if stage in reports:
            continue
        if done is None or done.checkpoint is None:  # already trained: evaluate the newest checkpoint
            from student_train.checkpoint import latest_checkpoint
            checkpoint = latest_checkpoint(str(folder))
        else:
            checkpoint = done.checkpoint
        reports[stage] = evaluate_checkpoint(checkpoint, per_class=per_class, noise="report", **kwargs)
        save_report(reports[stage], str(out / f"eval_{stage}.json"))
    return {"student": name, "seed": seed, "kd_seconds": t1 - t0, "ar_seconds": t2 - t1,
            "eval_seconds": time.time() - t2, "kd": reports["kd"], "ar": reports["ar"], "kd_from": args.kd_from,
            "chunk_costs": chunk_costs(str(out / "ar"))}


def _scored_from(spec: str, name: str) -> tuple[Path, str]:
    """--scored-from OTHER_OUT[:STUDENT] -> (OTHER_OUT, the student's name there)."""
    folder, _, there = spec.partition(":")
    return Path(folder), there or name


def rescore(name: str, seed: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Score another bench's trained models of a student here (e.g. at other lengths), keeping
    their train times: its KD model where it was trained (its own folder, or the one its
    --kd-from named), its AR model, both at their newest checkpoint."""
    from pipeline.eval import evaluate_checkpoint, save_report
    from student_train.checkpoint import latest_checkpoint
    from student_train.streaming_cost import chunk_costs

    folder, there = _scored_from(args.scored_from, name)
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    row = next((r for r in rows if (r["student"], r["seed"]) == (there, seed)), None)
    if row is None:
        raise SystemExit(f"--scored-from: {folder}/results.jsonl has no {there} seed {seed}")
    # a stage-2 ablation's --kd-from folder holds s2dit's KD model (the name may be gone from
    # configs/compare.toml since: regression_0 is s2dit's recipe now)
    kd_root = Path(row.get("kd_from") or folder)
    kd_dir = next((d for n in (there, "s2dit") if (d := kd_root / n / f"seed{seed}" / "kd").exists()), None)
    if kd_dir is None:
        raise SystemExit(f"--scored-from: no KD model of {there} seed {seed} under {kd_root}")
    ar_dir = folder / there / f"seed{seed}" / "ar"
    _, _, eval_section = _configs(args.config, seed, overrides_of(name), None, None)
    per_class = args.per_class or eval_section.get("per_class", 96)
    lengths = tuple(args.lengths or eval_section.get("lengths", [1]))
    t0 = time.time()
    scored_kd = kd_dir.parent / "eval_kd.json"  # KD has no lengths: its scores there are kept
    reports = {"kd": json.loads(scored_kd.read_text()) if scored_kd.exists() else
               evaluate_checkpoint(latest_checkpoint(str(kd_dir)), per_class=per_class, noise="report"),
               "ar": evaluate_checkpoint(latest_checkpoint(str(ar_dir)), per_class=per_class, noise="report",
                                         lengths=lengths, whole_clip=False, lcha_window=args.lcha_window)}
    for stage, report in reports.items():
        save_report(report, str(out / f"eval_{stage}.json"))
    return {"student": name, "seed": seed, "kd_seconds": row["kd_seconds"], "ar_seconds": row["ar_seconds"],
            "eval_seconds": time.time() - t0, **reports, "kd_from": row.get("kd_from"),
            "scored_from": f"{folder}:{there}", "chunk_costs": chunk_costs(str(ar_dir))}


def adopt_run(run: str) -> dict[str, Any]:
    """The s2dit row of a finished run folder: its eval_kd.json, eval_ar.json and stage times."""
    from student_train.streaming_cost import chunk_costs

    folder = Path(run)
    state = json.loads((folder / "run_state.json").read_text())
    stages = state["stages"]
    seconds = {name: stages.get(name, {}).get("seconds") for name in ("train_kd", "train_ar", "eval_ar")}
    seed = tomllib.loads((folder / "run.toml").read_text()).get("run", {}).get("seed", 0)
    return {"student": "s2dit", "seed": int(seed), "kd_seconds": seconds["train_kd"],
            "ar_seconds": seconds["train_ar"], "eval_seconds": seconds["eval_ar"], "from_run": run,
            "kd": json.loads((folder / "eval_kd.json").read_text()),
            "ar": json.loads((folder / "eval_ar.json").read_text()),
            "chunk_costs": chunk_costs(str(folder / "student_ar"))}


def _cell(s: dict[str, Any], key: str) -> str:
    if key not in s:
        return "-"
    ci = s.get(f"{key}_ci")
    return f"{s[key]:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def table(results: list[dict[str, Any]]) -> str:
    head = ("| student | seed | model | gate | adherence | recall | went on (0.5) | mode TV (floor) | "
            "amp. bias | ghost | r / teacher r |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in results:
        for set_key, key, label in ROWS:
            s = _report_of(r, key).get(set_key, {}).get(key)
            if s is None:
                continue
            gate = "pass" if s["gate"]["passed"] else "FAIL: " + ", ".join(s["gate"]["failed"])
            lines.append(
                f"| {r['student']} | {r['seed']} | {label} | {gate} | {_cell(s, 'adherence')} | "
                f"{_cell(s, 'recall')} | {_cell(s, 'branch_rate')} | {s['mode_tv']:.3f} ({s['mode_tv_floor']:.3f}) | "
                f"{s['amplitude_bias']:+.3f} | {s['ghost_energy']:.4f} | {s.get('dispersion_vs_reference', float('nan')):.2f} |")
    return "\n".join(lines)


SUMMARY_KEYS = (("adherence", "adherence"), ("recall", "recall"), ("recall_chance", "recall chance"),
                ("branch_rate", "went on (0.5)"),
                ("mode_tv", "mode TV"), ("amplitude_bias", "amp. bias"), ("ghost_energy", "ghost"),
                ("contrast", "contrast"))


def summary(results: list[dict[str, Any]]) -> str:
    """One row per student and model over its training seeds: gate passes k/n, then each
    metric's mean ± 95% t half-width over seeds (pipeline.compare.seed_summary; the per-seed
    Wilson intervals of `table` are the evaluation noise alone)."""
    from pipeline.compare import seed_summary

    head = ("| student | model | seeds | gate passes | " + " | ".join(label for _, label in SUMMARY_KEYS)
            + " |\n|---|---|---|---|" + "---|" * len(SUMMARY_KEYS))
    lines = [head]
    for name in dict.fromkeys(r["student"] for r in results):
        runs = sorted((r for r in results if r["student"] == name), key=lambda r: r["seed"])
        for set_key, key, label in ROWS:
            scores = [s for r in runs if (s := _report_of(r, key).get(set_key, {}).get(key)) is not None]
            if not scores:
                continue
            agg = seed_summary(scores, [k for k, _ in SUMMARY_KEYS])
            cells = [agg["metrics"][k].text() if k in agg["metrics"] else "-" for k, _ in SUMMARY_KEYS]
            lines.append(f"| {name} | {label} | {agg['n']} | {agg['gate_passes']}/{agg['n']} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def versus(results: list[dict[str, Any]], reference: str) -> str:
    """``reference`` minus every other student per model row, in recall and adherence: Welch's
    difference over their training seeds (pipeline.compare.seed_difference, as the comparison
    page's), with its 95% interval and verdict; paired seed by seed (paired_difference) when
    both students' stage 2 started from the same KD model on every seed (a stage-2 ablation)."""
    from pipeline.compare import seed_difference
    from pipeline.compare.stats import paired_difference

    def runs(name: str, seeds: set[int] | None = None) -> list[dict[str, Any]]:
        return sorted((r for r in results if r["student"] == name and (seeds is None or r["seed"] in seeds)),
                      key=lambda r: r["seed"])

    def values(name: str, set_key: str, key: str, metric: str, seeds: set[int] | None) -> list[float]:
        return [s[metric] for r in runs(name, seeds)
                if isinstance((s := _report_of(r, key).get(set_key, {}).get(key) or {}).get(metric), (int, float))]

    def paired_seeds(name: str) -> set[int] | None:
        """The seeds both have, when on each of them both started stage 2 from the same KD model."""
        common = {r["seed"] for r in runs(reference)} & {r["seed"] for r in runs(name)}
        a, b = runs(reference, common), runs(name, common)
        same = bool(common) and all(x["kd"].get("checkpoint") == y["kd"].get("checkpoint") for x, y in zip(a, b, strict=True))
        return common if same else None

    lines = [f"| {reference} minus | model | seeds | recall | adherence |\n|---|---|---|---|---|"]
    for name in dict.fromkeys(r["student"] for r in results):
        if name == reference:
            continue
        seeds = paired_seeds(name)  # None: Welch over every seed of each
        difference = seed_difference if seeds is None else paired_difference
        for set_key, key, label in ROWS:
            cells, seeds_text = [], ""
            for metric in ("recall", "adherence"):
                a, b = values(reference, set_key, key, metric, seeds), values(name, set_key, key, metric, seeds)
                if a and b and (len(a) == len(b) or difference is seed_difference):
                    d = difference(a, b)
                    cells.append(f"{d.text()} {d.verdict}" + (" (paired)" if d.paired else ""))
                    seeds_text = f"{d.n_a} / {d.n_b}"
                else:
                    cells.append("-")
            if seeds_text:
                lines.append(f"| {name} | {label} | {seeds_text} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def times_table(results: list[dict[str, Any]]) -> str:
    """Wall time per student over its seeds (mean, min-max): KD (a stage-2 ablation's is the KD
    model it started from: "reused", its seconds not measured here), stage 2, scoring."""
    lines = ["| student | seeds | KD (s) | stage 2 (s) | scoring (s) |\n|---|---|---|---|---|"]

    def spread(values: list[float]) -> str:
        return f"{sum(values) / len(values):.0f} ({min(values):.0f}-{max(values):.0f})" if values else "-"

    for name in dict.fromkeys(r["student"] for r in results):
        runs = [r for r in results if r["student"] == name]
        kd = "reused" if all(r.get("kd_from") for r in runs) else spread(
            [r["kd_seconds"] for r in runs if not r.get("kd_from") and r.get("kd_seconds")])
        lines.append(f"| {name} | {len(runs)} | {kd} | {spread([r['ar_seconds'] for r in runs if r.get('ar_seconds')])} "
                     f"| {spread([r['eval_seconds'] for r in runs if r.get('eval_seconds')])} |")
    return "\n".join(lines)


def teacher_table(results: list[dict[str, Any]]) -> str:
    """The teacher's own samplers on the same noise (no training, whole clip), from the first
    row's evaluation: they are the same in every row (pipeline/compare/rows.py)."""
    from pipeline.compare.rows import teacher_scores

    lines = [("| teacher sampler | length | gate | adherence | recall | went on (0.5) | mode TV | amp. bias "
              "| ghost | contrast |\n|---|---|---|---|---|---|---|---|---|---|")]
    for length, samplers in (teacher_scores(results[0]["ar"]).get("held_out_seeds", {}) if results else {}).items():
        for name, s in samplers.items():
            gate = "reference" if s["role"] == "reference" else \
                "pass" if s["gate"]["passed"] else "FAIL: " + ", ".join(s["gate"]["failed"])
            lines.append(f"| {name} | {length} | {gate} | {_cell(s, 'adherence')} | {_cell(s, 'recall')} | "
                         f"{_cell(s, 'branch_rate')} | {_cell(s, 'mode_tv')} | {_cell(s, 'amplitude_bias')} | "
                         f"{_cell(s, 'ghost_energy')} | {_cell(s, 'contrast')} |")
    return "\n".join(lines)


def _report_of(result: dict[str, Any], key: str) -> dict[str, Any]:
    return result["kd"] if key.startswith("student_4step") or "fullstep" in key else result["ar"]


def _parser() -> argparse.ArgumentParser:
    from pipeline.commands.train import frames_or_trained  # the CLI's own W|trained parser

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", required=True, help="the memory-task cache, e.g. runs/memory/cache@train")
    parser.add_argument("--config", default="configs/memory.toml", help="run config whose recipes are used")
    parser.add_argument("--students", nargs="+", default=list(STUDENTS),
                        choices=list(dict.fromkeys([*STUDENTS, *compare_variants()])),
                        help="sanity students, or issue 26's variants by their configs/compare.toml "
                             "names (default: s2dit and the sanity students)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds")
    parser.add_argument("--out", default="runs/memory_bench")
    parser.add_argument("--kd-steps", type=int, help="override S2DiT-KD steps (default: the config's)")
    parser.add_argument("--ar-steps", type=int, help="override the causal-phase steps")
    parser.add_argument("--kd-from", help="another bench OUT folder whose <student>/seed<k>/kd is stage 2's "
                        "start (no KD training; its eval_kd.json is reused), e.g. KD models trained on the "
                        "same teacher's cache without causal pairs; a stage-2 ablation (critic_5, ...) starts from "
                        "s2dit's")
    parser.add_argument("--per-class", type=int, help="held-out samples per class (default: [eval])")
    parser.add_argument("--lengths", type=int, nargs="+", help="streaming lengths (default: [eval])")
    parser.add_argument("--run", help="a finished `s2dit run` folder of the same config: its scores are "
                                      "the s2dit row of its [run] seed (not trained twice)")
    parser.add_argument("--scored-from", metavar="OTHER_OUT[:STUDENT]",
                        help="train nothing: score another bench folder's trained models of each student "
                             "(or of STUDENT there) here, e.g. at more --lengths; their train times are kept")
    parser.add_argument("--with", dest="with_rows", action="append", default=[], metavar="OTHER_OUT:STUDENT[,STUDENT]",
                        help="also table these students' rows of another bench folder, for seeds this one has "
                             "not scored (e.g. seed 0 of a sanity student trained in an earlier session)")
    parser.add_argument("--lcha-window", metavar="W|trained", type=frames_or_trained,
                        help="score the streaming rows with LCHA's sums windowed (s2dit eval --lcha-window); "
                             "the rows are named STUDENT+lcha. With --scored-from: the trained models of "
                             "another bench folder, scored again so")
    parser.add_argument("--table-only", action="store_true",
                        help="train nothing: write OUT/table.md from OUT/results.jsonl (e.g. after "
                             "several bench processes, one per core, appended to it)")
    parser.add_argument("--versus", metavar="STUDENT",
                        help="also table STUDENT minus every other student (recall, adherence) over "
                             "training seeds: Welch's 95%% interval (paired seed by seed when both started stage 2 "
                             "from the same KD models) and ahead / behind / not separated")
    return parser


def main() -> None:
    args = _parser().parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    results_path = Path(args.out) / "results.jsonl"
    results_path.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["student"], r["seed"]): r for r in map(json.loads, results_path.read_text().splitlines())} \
        if results_path.exists() else {}
    for spec in args.with_rows:
        folder, _, names = spec.partition(":")
        for row in map(json.loads, (Path(folder) / "results.jsonl").read_text().splitlines()):
            if row["student"] in names.split(","):
                done.setdefault((row["student"], row["seed"]), {**row, "tabled_from": folder})
    if args.run:
        adopted = adopt_run(args.run)
        done.setdefault((adopted["student"], adopted["seed"]), adopted)
    for seed in [] if args.table_only else args.seeds:
        for name in args.students:
            if (row_name(name, args), seed) in done:
                continue
            result = {**train_and_score(name, seed, args), "student": row_name(name, args)}
            done[(result["student"], seed)] = result
            with results_path.open("a") as handle:
                handle.write(json.dumps(result) + "\n")
            print(f"{name} seed {seed}: KD {result['kd_seconds']:.0f} s, AR {result['ar_seconds']:.0f} s", flush=True)
    results = list(done.values())
    text = (f"{summary(results)}\n\nThe teacher, no training (the same noise):\n\n{teacher_table(results)}\n\n"
            f"Wall time (one process per core):\n\n{times_table(results)}\n\n"
            f"Per seed (95% Wilson intervals: evaluation noise only):\n\n{table(results)}\n")
    if args.versus:
        text += f"\n{args.versus} against each student (Welch over training seeds, or paired):\n\n{versus(results, args.versus)}\n"
    (Path(args.out) / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
