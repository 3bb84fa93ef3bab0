"""`s2dit demo`: the end-to-end job on embedded defaults (see pipeline/run.py)."""

from __future__ import annotations

import argparse
import dataclasses
import os

from cache_schema import encoding_names
from pipeline.run import DemoConfig, run_demo


def _demo(args: argparse.Namespace) -> int:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(DemoConfig)
                 if getattr(args, f.name, None) is not None}
    run_demo(DemoConfig(**overrides))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo", help="end to end: analytic teacher cache (Ray) -> verify -> tag -> S2DiT-KD -> S2DiT-AR -> score",
        description="Generate a versioned analytic-teacher cache with Ray, verify it, train the "
                    "S2DiT student by 2-in-1 distillation (S2DiT-KD), self-force it into the "
                    "streaming S2DiT-AR, score both with the analytic oracle against the teacher "
                    "(AR chunk by chunk), and write report.json and preview.png.")
    defaults = DemoConfig()
    demo.add_argument("--out", help=f"run folder or URL (default {defaults.out})")
    demo.add_argument("--train-classes", type=int, dest="train_classes",
                      help=f"trained attribute combinations (default {defaults.train_classes})")
    demo.add_argument("--per-class", type=int, dest="per_class",
                      help=f"cached trajectories per class (default {defaults.per_class})")
    demo.add_argument("--encoding", choices=encoding_names(), help="cache encoding (default wds)")
    demo.add_argument("--num-actors", type=int, dest="num_actors", help="teacher actors (default 2)")
    demo.add_argument("--train-steps", type=int, dest="train_steps",
                      help=f"optimiser steps (default {defaults.train_steps})")
    demo.add_argument("--batch-size", type=int, dest="batch_size", help="trajectories per step")
    demo.add_argument("--ar-steps", type=int, dest="ar_steps",
                      help=f"stage-2 self-forcing steps, 0 skips stage 2 (default {defaults.ar_steps})")
    demo.add_argument("--ar-causal-steps", type=int, dest="ar_causal_steps",
                      help="stage-2 causal-phase (teacher forcing) steps before self-forcing "
                           f"(default {defaults.ar_causal_steps})")
    demo.add_argument("--ar-batch-size", type=int, dest="ar_batch_size",
                      help=f"streaming rollouts per stage-2 step (default {defaults.ar_batch_size})")
    demo.add_argument("--eval-per-class", type=int, dest="eval_per_class", help="held-out samples per class")
    demo.add_argument("--seed", type=int, help="seed of everything (default 0)")
    demo.set_defaults(func=_demo)
