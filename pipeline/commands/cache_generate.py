"""`s2dit cache generate`: run the teacher job (its --set is also `cache estimate`'s)."""

from __future__ import annotations

import argparse
import dataclasses

from teacher_jobs.cli_args import add_generate_args, run_generate


def add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="any [job] key (repeatable; teacher.KEY for [job.teacher]), the value "
                             "read as TOML and checked like the file's, after the file and the "
                             "flags: --set seeds_per_prompt=2 --set teacher.steps=12")


def parse_sets(args: argparse.Namespace) -> None:
    """``--set`` into ``args.job_sets`` (what config_from_args applies last)."""
    from pipeline.graph.overrides import table_overrides
    from teacher_jobs.config import JobConfig

    args.job_sets = table_overrides(args.overrides, "job", (f.name for f in dataclasses.fields(JobConfig)))


def _generate(args: argparse.Namespace) -> int:
    parse_sets(args)
    return run_generate(args)


def register(subparsers: argparse._SubParsersAction) -> None:
    gen = subparsers.add_parser(
        "generate", help="run the teacher over a prompt corpus into a versioned cache (Ray)",
        description="Run the teacher over a prompt corpus on Ray actors and write trajectories, "
                    "scores and embeddings to a cache; rerunning the same command resumes.")
    add_generate_args(gen)
    add_set(gen)
    gen.set_defaults(func=_generate)
