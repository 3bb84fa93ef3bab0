"""`s2dit run CONFIG.toml`: the whole pipeline as one resumable stage graph (pipeline/graph)."""

from __future__ import annotations

import argparse
import os
import textwrap

from cache_schema.reachability import check_reachable
from cache_schema.store import refuse_url_credentials
from pipeline.graph import SECTIONS, STAGE_NAMES, RunConfig, load_run_config
from pipeline.graph.stages import stage_lines
from pipeline.run_api import plan_config, run_config

ABOUT = textwrap.fill(
    "Every stage records the fingerprint of its inputs (its config section, its upstream "
    "stages) and its outputs in RUN_DIR/run_state.json. Rerunning the same command skips what "
    "is up to date, resumes a stage that was interrupted (the cache job and the trainers "
    "continue from what they committed) and reruns what changed and everything after it. The "
    "report is RUN_DIR/report.html (also `s2dit report RUN_DIR`, for a partial run too).", 95)
EXAMPLES = """examples:
  s2dit run configs/demo.toml                       # the demo (what `s2dit demo` runs)
  s2dit run configs/tiny_wan.toml --out runs/wan    # tiny diffusers Wan teacher, text to MP4
  s2dit run configs/demo.toml --from train_ar       # redo stage 2 and what follows
  s2dit run configs/demo.toml --only report         # rewrite the report only
  s2dit run configs/demo.toml --plan                # what a run would do now, without running
  s2dit run configs/demo.toml --set train.lr=3e-3 --set train_ar.causal_steps=50
                                                    # override any key of any section
  s2dit run configs/compare.toml --out runs/memory  # students side by side on that run's cache:
                                                    # RUN/compare/index.html (the compare stage)
"""


def epilog() -> str:
    """The help's stage list (read when the parser is built: a stage registered after this
    module's import is in it), what a rerun does, and examples."""
    return "\n".join(["stages, in order ([section] -> what it writes):", *stage_lines(), "",
                      ABOUT, "", EXAMPLES])


def execute(config: RunConfig, args: argparse.Namespace, out: str | None = None) -> int:
    """Run ``config`` with the graph flags of ``args`` (``add_graph_flags``), or plan it."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    strings = _keyed_strings(config.resolved())
    for where, text in strings:  # refused as a flag's would be: every stage records its section
        refuse_url_credentials(text, f"{config.source} [{where}]")
    for url in [out or "", *(text for _, text in strings)]:  # the config's URLs, as the flags'
        check_reachable(url)
    if args.plan:
        plan_config(config, out=out, from_stage=args.from_stage, only=args.only)
        return 0
    run_config(config, out=out, from_stage=args.from_stage, only=args.only,
               progress=not args.no_progress)
    return 0


def _keyed_strings(value: object, where: str = "") -> list[tuple[str, str]]:
    """(section.key, string) of every string of a resolved config, at any depth."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _keyed_strings(v, f"{where}.{k}" if where else k)]
    if isinstance(value, list | tuple):
        return [p for v in value for p in _keyed_strings(v, where)]
    return [(where, value)] if isinstance(value, str) else []


def _run(args: argparse.Namespace) -> int:
    return execute(load_run_config(args.config, args.overrides), args, out=args.out)


def add_graph_flags(parser: argparse.ArgumentParser) -> None:
    """The flags `s2dit run` and `s2dit demo` share: which stages, plan or run, overrides."""
    parser.add_argument("--from", dest="from_stage", choices=STAGE_NAMES, metavar="STAGE",
                        help=f"rerun STAGE and every stage after it ({', '.join(STAGE_NAMES)})")
    parser.add_argument("--only", choices=STAGE_NAMES, metavar="STAGE",
                        help="run only STAGE (its input stages must have finished)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE",
                        help="override one key of any section (repeatable), the value read as "
                             "TOML and checked like the file's: --set train.lr=3e-3 --set "
                             "train.model.dim=64 --set train_ar.enabled=false")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--plan", action="store_true",
                        help="print what each stage would do (run, resume, up to date, skip) and "
                             "why, without running or writing anything")


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser(
        "run", help="the whole pipeline (cache -> train -> evaluate -> sample -> report) from "
                    "one config, resumable",
        description="Run the stage graph of a run config (TOML) in a run folder: generate and "
                    "verify the teacher cache, train S2DiT-KD and S2DiT-AR, score, sample text "
                    "to video and write the HTML report.",
        epilog=epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("config", metavar="CONFIG.toml",
                     help=f"run config (sections {' '.join(f'[{s}]' for s in SECTIONS)}; see "
                          "configs/demo.toml)")
    run.add_argument("--out", metavar="URL",
                     help="run folder (local path or fsspec URL; default: the config's [run] out)")
    add_graph_flags(run)
    run.set_defaults(func=_run)
