"""A small TOML writer for resolved run configs (tomllib reads TOML; nothing here writes it).

Handles what configs hold: tables (nested), strings, booleans, integers, floats and arrays of
those. ``None`` values are left out (TOML has no null: an absent key means the default).
Credentials are masked (cache_schema.redact): run.toml is a record, read and copied by people."""

from __future__ import annotations

import json
import math
from typing import Any

from cache_schema.redact import redact_secrets


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):  # inside an array: an inline table
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()
                               if v is not None) + "}"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")


def _key(key: str) -> str:
    bare = key and all(c.isalnum() or c in "-_" for c in key)
    return key if bare else json.dumps(key)


def _table(name: str, table: dict[str, Any], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if v is not None and not isinstance(v, dict)}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    if name and (scalars or not tables):
        lines.append(f"[{name}]")
    lines.extend(f"{_key(k)} = {_value(v)}" for k, v in scalars.items())
    if name and (scalars or not tables):
        lines.append("")
    for key, sub in tables.items():
        _table(f"{name}.{_key(key)}" if name else _key(key), sub, lines)


def dumps(data: dict[str, Any]) -> str:
    lines: list[str] = []
    _table("", redact_secrets(data), lines)
    return "\n".join(lines).rstrip("\n") + "\n"
