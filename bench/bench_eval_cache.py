"""What the evaluation's cache of the teacher's samples saves (pipeline.eval_reference).

Scores one checkpoint three times in one process, each as a new process would (the in-memory
copies forgotten): without the disk cache, with an empty one (it fills it), and with the filled
one (what the next checkpoint of the same task and noise costs). Prints the seconds of each,
the teacher sampling runs counted through the real sampler, the ratio warm / off, and whether
the scores are identical. The cache lives in a temporary directory, never ~/.cache.

    .venv/bin/python bench/bench_eval_cache.py --checkpoint runs/memory/student_ar --per-class 8 --lengths 1 4
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time


def _timed(checkpoint: str, cache: str, calls: list, **kwargs) -> tuple[float, int, str]:
    from pipeline import eval_reference
    from pipeline.eval import evaluate_checkpoint

    eval_reference.clear_memory()
    before, t0 = len(calls), time.perf_counter()
    report = evaluate_checkpoint(checkpoint, reference_cache=cache, **kwargs)
    report.pop("checkpoint")
    return time.perf_counter() - t0, len(calls) - before, json.dumps(report, sort_keys=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint, or a folder of them (the newest)")
    parser.add_argument("--per-class", type=int, default=8)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1])
    parser.add_argument("--noise", default="report", choices=["report", "tune"])
    args = parser.parse_args()

    from pipeline import eval_reference
    from student_train.checkpoint import latest_checkpoint

    checkpoint = latest_checkpoint(args.checkpoint) or args.checkpoint
    calls: list[int] = []
    real = eval_reference.sample_latents

    def counted(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    eval_reference.sample_latents = counted
    kwargs = {"per_class": args.per_class, "lengths": tuple(args.lengths), "noise": args.noise}
    with tempfile.TemporaryDirectory() as cache:
        rows = {name: _timed(checkpoint, where, calls, **kwargs)
                for name, where in (("off", "off"), ("cold", cache), ("warm", cache))}
    for name, (seconds, runs, _) in rows.items():
        print(f"{name:5s} {seconds:7.1f} s  teacher sampling runs {runs}")
    print(f"warm / off: {rows['warm'][0] / rows['off'][0]:.2f}; scores identical: "
          f"{rows['off'][2] == rows['cold'][2] == rows['warm'][2]}")


if __name__ == "__main__":
    main()
