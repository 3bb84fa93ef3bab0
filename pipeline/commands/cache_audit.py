"""Placeholder while session 7 builds this command (its owner replaces this module)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    del subparsers  # registers nothing yet
