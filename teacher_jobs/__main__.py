"""`python -m teacher_jobs generate ...`: the entry point for `ray job submit`."""

from __future__ import annotations

import argparse
import sys

from .cli_args import add_generate_args, run_generate


def build_parser() -> argparse.ArgumentParser:
    """The entry point's parser (tests parse README lines with it without running them)."""
    parser = argparse.ArgumentParser(prog="python -m teacher_jobs",
                                     description="Generate a teacher cache on a Ray cluster.")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="run the teacher over a corpus into a cache",
                         description="Run the teacher over a prompt corpus and write a versioned "
                                     "cache; rerunning resumes.")
    add_generate_args(gen)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_generate(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
