"""Per-chunk streaming cost of trained students side by side, measured in one run (issue 26).

Each student streams ``--length`` x its trained clip; the steady-state seconds per chunk (the
mean of the last 5 chunks, the chunks before them committed undenoised:
``streaming_cost.steady_chunk_seconds``) are timed pass by pass, interleaved across the
students so that all see the same load, and the median over passes is kept; FLOPs of the last
chunk for one stream beside them. Ratios are against the first student.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_chunk_cost.py \\
        s2dit=runs/memory_bench2/s2dit/seed0/ar full_attention=runs/memory_bench_s13/full_attention/seed0/ar

``--lcha-window W|trained`` times each student a second time streamed with LCHA's sums windowed
(``NAME+lcha``; student_train/model/bounded.py long_stream), beside it as trained.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from student_train.streaming_cost import chunk_flops, steady_chunk_seconds
from student_train.student import StudentCheckpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("students", nargs="+", metavar="NAME=CHECKPOINT",
                        help="a name and a checkpoint (a training folder: its newest)")
    parser.add_argument("--length", type=int, default=4, help="multiple of the trained clip length")
    parser.add_argument("--batch", type=int, default=16, help="streams per timed batch")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved passes per student")
    parser.add_argument("--lcha-window", metavar="W|trained",
                        help="also each student with LCHA's streaming sums windowed (NAME+lcha)")
    args = parser.parse_args()
    students = {}
    for item in args.students:
        name, sep, url = item.partition("=")
        if not sep:
            parser.error(f"{item!r}: give NAME=CHECKPOINT")
        students[name] = StudentCheckpoint.load(url)
        if args.lcha_window is not None:
            window = args.lcha_window if args.lcha_window == "trained" else int(args.lcha_window)
            students[f"{name}+lcha"] = students[name].long_stream(lcha_window=window)
    seconds: dict[str, list[float]] = {name: [] for name in students}
    with torch.inference_mode():
        for _ in range(args.repeats):
            for name, student in students.items():
                last = steady_chunk_seconds(student, args.length, batch=args.batch)
                seconds[name].append(sum(last) / len(last))
    base = statistics.median(seconds[next(iter(students))])
    print(f"torch threads {torch.get_num_threads()}, batch {args.batch}, {args.length}x, "
          f"{args.repeats} interleaved passes (median)\n")
    print("| student | layout | ms per chunk | / first | GFLOPs per chunk |\n|---|---|---|---|---|")
    for name, student in students.items():
        ms = statistics.median(seconds[name])
        cfg = student.model.config
        window = f", window {cfg.ssa_window}" + (" + sink" if cfg.ssa_sink else "") if cfg.ssa_window else ""
        window += f", LCHA window {cfg.lcha_window}" if cfg.lcha_window is not None else ""
        print(f"| {name} | {' / '.join(cfg.layout)}{window}, dim {cfg.dim} | {ms * 1e3:.1f} | "
              f"{ms / base:.2f} | {chunk_flops(student, args.length) / 1e9:.4f} |")


if __name__ == "__main__":
    main()
