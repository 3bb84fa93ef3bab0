"""`s2dit demo`: `s2dit run` on the bundled demo config (configs/demo.toml), flags mapped onto it."""

from __future__ import annotations

import argparse

from cache_schema import encoding_names
from pipeline.commands.run import add_graph_flags, execute
from pipeline.graph import bundled_config, load_run_config
from pipeline.graph.load import apply_overrides
from pipeline.run_api import DEMO_CONFIG, DEMO_FLAGS, demo_config


def _demo(args: argparse.Namespace) -> int:
    config = demo_config(**{flag: getattr(args, flag) for flag in DEMO_FLAGS})
    apply_overrides(config, args.overrides)  # after the named flags: --set has the last word
    return execute(config, args)


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = load_run_config(bundled_config(DEMO_CONFIG)).resolved()

    def default(flag: str) -> object:
        section, key = DEMO_FLAGS[flag]
        return defaults.get(section, {}).get(key)

    demo = subparsers.add_parser(
        "demo", help="end to end on the analytic teacher: cache (Ray) -> verify -> tag -> "
                     "S2DiT-KD -> S2DiT-AR -> scores -> videos -> report.html",
        description="`s2dit run` on the bundled demo config (configs/demo.toml): generate a "
                    "versioned analytic-teacher cache with Ray, verify it, train the S2DiT "
                    "student by 2-in-1 distillation (S2DiT-KD), self-force it into the streaming "
                    "S2DiT-AR, score both with the analytic oracle against the teacher (AR chunk "
                    "by chunk), sample text to video, and write RUN_DIR/report.html and "
                    "report.json. Rerunning resumes; each flag overrides one key of the config, "
                    "--set any key, and every `s2dit run` flag works here (--plan, --only, "
                    "--from).")
    demo.add_argument("--out", help=f"run folder or URL (default {default('out')})")
    demo.add_argument("--train-classes", type=int, dest="train_classes",
                      help=f"trained attribute combinations (default {default('train_classes')})")
    demo.add_argument("--per-class", type=int, dest="per_class",
                      help=f"cached trajectories per class (default {default('per_class')})")
    demo.add_argument("--encoding", choices=encoding_names(),
                      help=f"cache encoding (default {default('encoding')})")
    demo.add_argument("--num-actors", type=int, dest="num_actors",
                      help=f"teacher actors (default {default('num_actors')})")
    demo.add_argument("--train-steps", type=int, dest="train_steps",
                      help=f"S2DiT-KD optimiser steps (default {default('train_steps')})")
    demo.add_argument("--batch-size", type=int, dest="batch_size",
                      help=f"trajectories per KD step (default {default('batch_size')})")
    demo.add_argument("--ar-steps", type=int, dest="ar_steps",
                      help=f"stage-2 self-forcing (DMD) steps, 0 skips stage 2 (default {default('ar_steps')})")
    demo.add_argument("--ar-causal-steps", type=int, dest="ar_causal_steps",
                      help="stage-2 causal-phase (teacher forcing) steps before self-forcing "
                           f"(default {default('ar_causal_steps')})")
    demo.add_argument("--ar-batch-size", type=int, dest="ar_batch_size",
                      help=f"streaming rollouts per stage-2 step (default {default('ar_batch_size')})")
    demo.add_argument("--eval-per-class", type=int, dest="eval_per_class",
                      help=f"held-out samples per class (default {default('eval_per_class')})")
    demo.add_argument("--seed", type=int, help=f"seed of everything (default {default('seed')})")
    add_graph_flags(demo)
    demo.set_defaults(func=_demo)
