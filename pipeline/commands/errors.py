"""Turning expected failures into one readable line on stderr and exit code 2.

``s2dit`` catches these for every command (``pipeline.cli.main``): bad input of any kind
(a URL, config, manifest, shard, checkpoint, prompt) is reported as ``error: <what and what to
do>`` without a traceback. ``S2DIT_DEBUG=1`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
import traceback
from collections.abc import Callable

from cache_schema import CacheError
from cache_schema.reachability import unreachable_message

Command = Callable[[argparse.Namespace], int]

# Expected failures of user input; anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (CacheError, ValueError, FileNotFoundError,
                                                 PermissionError, tomllib.TOMLDecodeError)
# Storage back ends raise their own types; recognised by module so none is imported here.
STORAGE_ERROR_MODULES = ("botocore", "aiobotocore", "s3fs", "gcsfs", "google.auth")


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, USER_ERRORS) or type(exc).__module__.startswith(STORAGE_ERROR_MODULES)


def describe(exc: BaseException) -> str:
    text = unreachable_message(exc) or str(exc) or type(exc).__name__
    if type(exc).__name__ == "NoCredentialsError":
        text += (" for object storage: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE "
                 "or AWS_SHARED_CREDENTIALS_FILE (credentials never go in a storage profile); "
                 "for an S3-compatible store also its endpoint (AWS_ENDPOINT_URL or "
                 "--storage-profile)")
    return text


def report(exc: BaseException) -> int:
    """Print ``error: ...`` (plus the traceback under S2DIT_DEBUG=1) to stderr; exit code 2."""
    if os.environ.get("S2DIT_DEBUG"):
        traceback.print_exception(exc, file=sys.stderr)
    print(f"error: {describe(exc)}", file=sys.stderr)
    return 2


def friendly_errors(func: Command, *expected: type[Exception]) -> Command:
    """Run ``func``; a CacheError (or one of ``expected``) prints 'error: ...' and returns 2."""
    caught = (CacheError, *expected)

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except caught as exc:
            return report(exc)
    return run
