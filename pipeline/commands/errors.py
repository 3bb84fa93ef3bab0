"""Turning expected failures into one readable line and exit code 2, shared by commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from cache_schema import CacheError

Command = Callable[[argparse.Namespace], int]


def friendly_errors(func: Command, *expected: type[Exception]) -> Command:
    """Run ``func``; a CacheError (or one of ``expected``) prints 'error: ...' and returns 2."""
    caught = (CacheError, *expected)

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except caught as exc:
            print(f"error: {exc}")
            return 2
    return run
