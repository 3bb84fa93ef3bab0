"""Side by side: the stage seconds and the oracle scores of finished `s2dit run` folders.

For the demo before/after tables (issue 16): each run folder's `run_state.json` (seconds per
stage) and `report.json` (held-out and unseen scores of S2DiT-KD and S2DiT-AR), one column per
run, and the ratio of each run's total to the first run's.

    .venv/bin/python bench/compare_runs.py runs/base runs/new0      # a Markdown table
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROWS = (  # (report key, split, sampler row, label)
    ("scores", "held_out_seeds", "student_4step", "S2DiT-KD 4-step, held-out"),
    ("scores", "held_out_seeds", "student_fullstep_grid", "S2DiT-KD full-step, held-out"),
    ("ar_scores", "held_out_seeds", "student_ar_4step_streaming", "S2DiT-AR streaming, held-out"),
    ("scores", "unseen_combinations", "student_4step", "S2DiT-KD 4-step, unseen"),
    ("ar_scores", "unseen_combinations", "student_ar_4step_streaming", "S2DiT-AR streaming, unseen"),
)


def load(run: Path) -> tuple[dict[str, float], dict]:
    state = json.loads((run / "run_state.json").read_text())["stages"]
    seconds = {name: float(s.get("seconds") or 0.0) for name, s in state.items()}
    report_path = run / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return seconds, report


def score(report: dict, key: str, split: str, row: str) -> str:
    s = report.get(key, {}).get(split, {}).get(row)
    if not s:
        return "-"
    return f"{s['adherence']:.3f} / {s['coverage']:.3f} / {s['dispersion_ratio']:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (the first is the reference)")
    args = parser.parse_args()
    loaded = [load(r) for r in args.runs]
    stages = list(loaded[0][0])
    header = "| | " + " | ".join(str(r) for r in args.runs) + " |"
    print(header)
    print("|---" * (len(args.runs) + 1) + "|")
    for stage in stages:
        print(f"| {stage} s | " + " | ".join(f"{sec.get(stage, 0.0):.1f}" for sec, _ in loaded) + " |")
    totals = [sum(sec.values()) for sec, _ in loaded]
    print("| **total s (min)** | " + " | ".join(f"**{t:.0f} ({t / 60:.1f})**" for t in totals) + " |")
    print("| total / first run's | " + " | ".join(f"{t / totals[0]:.3f}" for t in totals) + " |")
    for key, split, row, label in ROWS:
        print(f"| {label}: adherence / coverage / dispersion | "
              + " | ".join(score(rep, key, split, row) for _, rep in loaded) + " |")


if __name__ == "__main__":
    main()
