"""The schema of run_state.json, and where the paths it records may point.

run_state.json is input, not truth: a user may edit it, copy the run folder, or hand a folder
to someone else. ``validate_state`` checks the whole document when it is loaded (top level,
every stage record, the typed output keys each stage declares in ``Stage.recorded``) and names
the first problem as ``stages.NAME.outputs.KEY`` in one ``RunStateError`` line. Recorded paths
are checked where they are read back (``check_paths``): each must lie inside the run folder, so
a copied run folder can never write into the original's cache; the error then names the stage
to rerun (``--from``), which writes them afresh here.
"""

from __future__ import annotations

import math
import os
import posixpath
from collections.abc import Iterator, Mapping
from typing import Any

from cache_schema.paths import split_scheme
from cache_schema.store import split_ref

STATUSES = ("pending", "running", "done", "failed", "skipped")
TOP_KEYS = {"run_version", "stages", "partial"}

# What a recorded output key may hold (``Stage.recorded``); path kinds are checked in the run
PATH, REF, PATHS = "path", "path@ref", "paths"  # a path; a cache URL@ref; nested paths
INT, STR, OPT_STR, STRS, NUMBERS = "int", "str", "str or null", "list of str", "object of numbers"
PATH_KINDS = (PATH, REF, PATHS)
OPTIONAL = "?"  # suffix: a key that records of older versions may lack (its kind when present)


def optional(kind: str) -> str:
    return kind + OPTIONAL

FIX = ("run_state.json is written by s2dit run alone: restore it, or start over in a new --out "
       "(or move this folder's run_state.json away with the rest of its files)")


class RunStateError(ValueError):
    """run_state.json (or a path it records) cannot be used; one line naming the key."""


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _strings(value: object) -> Iterator[str | None]:
    """Every leaf of a nested str / list / object value (None for a leaf that is not a str)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    else:
        yield None


_KIND_CHECKS = {
    PATH: lambda v: isinstance(v, str) and bool(v),
    REF: lambda v: isinstance(v, str) and bool(v),
    PATHS: lambda v: all(s for s in _strings(v)),
    INT: lambda v: _is_int(v) and v >= 0,
    STR: lambda v: isinstance(v, str),
    OPT_STR: lambda v: v is None or isinstance(v, str),
    STRS: lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
    NUMBERS: lambda v: isinstance(v, dict) and all(_number(n) for n in v.values()),
}

# The generic record keys and what they hold (any other key is kept and never read)
_RECORD = {
    "fingerprint": STR, "started": STR, "finished": STR, "error": STR, "reason": STR,
    "resumed": INT, "continued": STR,
}


def _where(url: str, key: str) -> str:
    return f"{url}: {key}"


def validate_state(data: object, url: str, recorded: Mapping[str, Mapping[str, str]]) -> None:
    """Refuse ``data`` (parsed run_state.json at ``url``) unless it is a document s2dit run
    writes. ``recorded``: per stage name, its output keys and their kinds."""
    if not isinstance(data, dict):
        raise RunStateError(f"{url} is not a JSON object; {FIX}")
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise RunStateError(f"{_where(url, unknown[0])} is not a key of run_state.json; {FIX}")
    stages = data.get("stages")
    if not isinstance(stages, dict):
        raise RunStateError(f"{_where(url, 'stages')} must be an object of stage records; {FIX}")
    partial = data.get("partial", [])
    if not isinstance(partial, list) or not all(
            isinstance(p, str) and p and "/" not in p and "\\" not in p and p not in (".", "..")
            for p in partial):
        raise RunStateError(f"{_where(url, 'partial')} must be a list of file names in the run "
                            f"folder; {FIX}")
    for name, record in stages.items():
        _validate_record(url, str(name), record, recorded.get(name, {}))


def _validate_record(url: str, name: str, record: object, kinds: Mapping[str, str]) -> None:
    at = f"stages.{name}"
    if not isinstance(record, dict):
        raise RunStateError(f"{_where(url, at)} must be an object; {FIX}")
    status = record.get("status")
    if status not in STATUSES:
        raise RunStateError(f"{_where(url, at + '.status')} is {status!r}, not one of "
                            f"{', '.join(STATUSES)}; {FIX}")
    for key, kind in _RECORD.items():
        if key in record and not _KIND_CHECKS[kind](record[key]):
            raise RunStateError(f"{_where(url, f'{at}.{key}')} must be a {kind}; {FIX}")
    if "seconds" in record and not (_number(record["seconds"]) and record["seconds"] >= 0):
        raise RunStateError(f"{_where(url, at + '.seconds')} must be a number >= 0; {FIX}")
    for key in ("inputs", "outputs"):
        if key in record and not isinstance(record[key], dict):
            raise RunStateError(f"{_where(url, f'{at}.{key}')} must be an object; {FIX}")
    outputs = record.get("outputs", {})
    for key, declared in kinds.items():
        kind = declared.removesuffix(OPTIONAL)
        if key not in outputs:
            if status == "done" and not declared.endswith(OPTIONAL):
                raise RunStateError(f"{_where(url, f'{at}.outputs.{key}')} is missing from a "
                                    f"finished stage; {FIX}")
            continue
        if not _KIND_CHECKS[kind](outputs[key]):
            raise RunStateError(f"{_where(url, f'{at}.outputs.{key}')} must be a {kind}, got "
                                f"{short(outputs[key])}; {FIX}")


def short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def inside(run_dir: str, url: str) -> bool:
    """Whether ``url`` names ``run_dir`` or something below it (same scheme; lexically, after
    normalising ``.`` and ``..``; a relative local path is taken from the working folder, as
    the run wrote it)."""
    run_scheme, run_path = split_scheme(run_dir)
    scheme, path = split_scheme(url)
    if scheme != run_scheme or "\0" in path:
        return False
    if scheme in ("", "file://"):
        base, target = os.path.abspath(run_path), os.path.abspath(path)
    else:
        base, target = posixpath.normpath("/" + run_path), posixpath.normpath("/" + path)
    return target == base or target.startswith(base.rstrip("/") + "/")


def recorded_paths(outputs: Mapping[str, Any], kinds: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """(key, path) of every recorded path in ``outputs`` (a cache URL without its @ref)."""
    for key, declared in kinds.items():
        kind = declared.removesuffix(OPTIONAL)
        if kind not in PATH_KINDS or key not in outputs:
            continue
        for value in _strings(outputs[key]):
            if value is not None:
                yield key, split_ref(value)[0] if kind == REF else value


def check_paths(run_dir: str, stage: str, outputs: Mapping[str, Any],
                kinds: Mapping[str, str]) -> None:
    """Refuse a recorded path of ``stage`` that is not inside ``run_dir``."""
    for key, path in recorded_paths(outputs, kinds):
        if not inside(run_dir, path):
            raise RunStateError(
                f"run_state.json: stages.{stage}.outputs.{key} is {short(path)}, outside this "
                f"run folder {run_dir} (a copied or moved run folder?); nothing of it is read: "
                f"rerun with --from {stage} (or an earlier stage) to write it here")
