"""``--set SECTION.KEY=VALUE``: any key of any run-config section from the command line.

The value is read as a TOML value (``3e-3``, ``true``, ``"text"``, ``[0.9, 0.99]``); a bare word
that is not one is a string (``--set train.device=cuda``). A dotted key reaches into sub-tables
(``--set train.model.dim=64``, ``--set job.teacher.steps=12``). An override replaces the value
the file (and its includes) gave; ``load.apply_overrides`` checks each one with the validators
the stages use, so an error names the override.

A command that reads one section (``s2dit train kd`` its ``[train]``, ``cache generate`` its
``[job]``) takes ``--set KEY=VALUE`` too, the section implied (``table_overrides``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Sequence
from typing import Any

from cache_schema.typed_config import did_you_mean

from .config import RunConfig, RunConfigError, refuse_unknown_keys

FORM = "SECTION.KEY=VALUE"
EXAMPLE = "--set train.lr=3e-3"


def parse_value(raw: str) -> Any:
    """A TOML value (``3e-3`` a float, ``[1, 2]`` a list, ``'x'`` a string); else the text."""
    try:
        parsed = tomllib.loads(f"value = {raw}")
    except tomllib.TOMLDecodeError:
        return raw
    return parsed["value"] if list(parsed) == ["value"] else raw


def parse_override(text: str, sections: Sequence[str], default: str | None = None
                   ) -> tuple[str, tuple[str, ...], Any]:
    """``train.model.dim=64`` -> (``train``, (``model``, ``dim``), 64); the section must be one
    of ``sections``. With a ``default`` section, a name not starting with a section is a key of
    it (``model.dim=64``)."""
    name, sep, raw = text.partition("=")
    section, _, key = name.strip().partition(".")
    if default is not None and section not in sections:
        section, key = default, name.strip()
    keys = tuple(k.strip() for k in key.split(".")) if key else ()
    if not sep or not section or not keys or not all(keys):
        form = f"KEY=VALUE or {default}.KEY=VALUE" if default else f"{FORM}, e.g. {EXAMPLE}"
        raise RunConfigError(f"--set {text}: give {form}")
    if section not in sections:
        raise RunConfigError(f"--set {text}: no section [{section}]{did_you_mean(section, sections)}"
                             f"; sections: {', '.join(sections)}")
    return section, keys, parse_value(raw.strip())


def _place(table: dict[str, Any], section: str, keys: tuple[str, ...], value: Any, text: str) -> None:
    for depth, key in enumerate(keys[:-1], 1):
        inner = table.setdefault(key, {})
        if not isinstance(inner, dict):
            where = ".".join((section, *keys[:depth]))
            raise RunConfigError(f"--set {text}: {where} is a value ({inner!r}), not a table")
        table = inner
    table[keys[-1]] = value


def set_override(config: RunConfig, text: str, sections: Sequence[str]) -> str:
    """Apply one override to ``config``; returns its section."""
    section, keys, value = parse_override(text, sections)
    _place(config.sections.setdefault(section, {}), section, keys, value, text)
    return section


def table_overrides(texts: Sequence[str], section: str, known: Iterable[str]) -> dict[str, Any]:
    """The ``--set`` values of a command reading one ``section``, as a nested dict
    (``model.dim=64`` -> ``{"model": {"dim": 64}}``); ``KEY=VALUE`` or ``SECTION.KEY=VALUE``.
    A top key that is none of ``known`` is refused naming the closest; the command's config
    class checks the values' types and ranges."""
    known = set(known)
    values: dict[str, Any] = {}
    for text in texts:
        _, keys, value = parse_override(text, (section,), default=section)
        try:
            refuse_unknown_keys(section, {keys[0]: value}, known)
        except RunConfigError as exc:
            raise RunConfigError(f"--set {text}: {exc}") from None
        _place(values, section, keys, value, text)
    return values
