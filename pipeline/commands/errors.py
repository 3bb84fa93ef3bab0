"""Turning expected failures into one readable line on stderr and exit code 2.

``s2dit`` catches these for every command (``pipeline.cli.main``): bad input of any kind
(a URL, config, manifest, shard, checkpoint, prompt) is reported as ``error: <what and what to
do>`` without a traceback, and so is a Ray Train failure (the failing rank, its exception type
and message). ``S2DIT_DEBUG=1`` shows the traceback as well (a Ray Train failure's carries each
worker's).
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


# Ray's exceptions for a worker process or node that died (not the code it ran)
DIED = {"ActorDiedError", "RayActorError", "WorkerCrashedError", "NodeDiedError",
        "OutOfMemoryError", "LocalRayletDiedError", "OwnerDiedError"}


def is_user_error(exc: BaseException) -> bool:
    return (isinstance(exc, USER_ERRORS) or type(exc).__module__.startswith(STORAGE_ERROR_MODULES)
            or is_training_failure(exc))


def is_training_failure(exc: BaseException) -> bool:
    """Ray Train's ``trainer.fit()`` failure (recognised by name: errors.py imports no Ray)."""
    return (type(exc).__module__.split(".")[0] == "ray"
            and any(c.__name__ == "TrainingFailedError" for c in type(exc).__mro__))


def _worker_errors(exc: BaseException) -> dict[int | None, BaseException]:
    """What failed inside Ray Train: rank -> the worker's own exception (rank None: the
    controller's), unwrapped from Ray's task-error wrappers."""
    failures = getattr(exc, "worker_failures", None)
    if not isinstance(failures, dict) or not failures:
        cause = getattr(exc, "controller_failure", None) or exc.__cause__
        failures = {None: cause} if cause is not None else {}
    out = {}
    for rank, error in failures.items():
        for _ in range(4):  # RayTaskError(...).cause, Ray Train's traceback wrapper
            inner = getattr(error, "cause", None) or getattr(error, "_base_exc", None)
            if not isinstance(inner, BaseException):
                break
            error = inner
        out[rank] = error
    return out


def describe_training_failure(exc: BaseException) -> str:
    """One line: the first failing rank's exception type and message, the other ranks that
    failed the same way, and what to do."""
    errors = _worker_errors(exc)
    if not errors:
        return (f"Ray Train failed ({type(exc).__name__}) before any worker reported an error; "
                "rerun the same command to resume from the newest checkpoint (S2DIT_DEBUG=1 "
                "shows Ray's trace)")
    ranks = sorted(errors, key=lambda r: -1 if r is None else r)
    first = errors[ranks[0]]
    what = f"{type(first).__name__}: {first}".rstrip(": ")
    same = [r for r in ranks if (type(errors[r]), str(errors[r])) == (type(first), str(first))]
    who = ("the Ray Train controller" if ranks[0] is None else
           f"Ray Train worker rank{'s' if len(same) > 1 else ''} {', '.join(map(str, same))}")
    others = len(ranks) - len(same)
    if others:
        who += f" (and {others} other rank{'s' if others > 1 else ''} with other errors)"
    if type(first).__name__ in DIED:
        todo = ("a worker process or its node died (out of memory?): rerun the same command to "
                "resume from the newest checkpoint, or let Ray Train restart the workers itself "
                "(--max-failures N, or [run] max_failures)")
    elif is_user_error(first):
        todo = "fix that and rerun the same command: training resumes from the newest checkpoint"
    else:
        todo = ("rerun the same command to resume from the newest checkpoint; S2DIT_DEBUG=1 "
                "shows each worker's traceback")
    return f"{who} failed: {what}; {todo}"


def describe(exc: BaseException) -> str:
    if is_training_failure(exc):
        return describe_training_failure(exc)
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
