"""One checker for every typed config (the job, its teacher section, both training stages, the
student model): each dataclass field's type annotation plus a range from a small declarative
table, so a bad value is one ``ConfigError`` naming the table, the key, the value and what is
allowed, before any other check compares or converts it (issue 17).

    @dataclass(kw_only=True, slots=True)
    class TrainConfig:
        TABLE: ClassVar[str] = "train"
        LIMITS: ClassVar[Limits] = {"steps": between(1, 10**7), "lr": between(0.0, 10.0)}
        steps: int = 600
        ...
        def __post_init__(self) -> None:
            check_config(self)  # first: later checks may then compare and convert freely

Type rules: ``bool`` is not an ``int``; an ``int`` field takes an integer only (never 2.0); a
``float`` field takes an int or a finite float (kept as given: a config's bytes and its
fingerprint stay what they were); ``X | None`` also takes None; ``tuple[T, T]`` and
``tuple[T, ...]`` take a list or tuple (stored as a tuple) of ``T``s, each in the range;
``Literal[...]`` and ``one_of(...)`` take the listed values; a class type takes an instance;
``Any`` and ``dict`` fields are checked by type only. Every field is checked, limits or not,
and a limits table naming a field the class does not have is refused when first used.

This module is in ``cache_schema`` because both ``teacher_jobs`` and ``student_train`` use it
and neither may import the other; it imports nothing of the project.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import numbers
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

INT64_MAX = 2**63 - 1


class ConfigError(ValueError):
    """A config value of the wrong type or outside its range (names table, key and value)."""


@dataclass(frozen=True, slots=True)
class Limit:
    """What a field (or each element of a tuple field) may hold besides its type."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # (lo, ... instead of [lo, ...
    hi_open: bool = False
    choices: tuple[Any, ...] | None = None
    min_len: int | None = None  # tuple[T, ...] fields
    max_len: int | None = None

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.lo is None and self.hi is None:
            return ""
        lo = "-inf" if self.lo is None else _num(self.lo)
        hi = "inf" if self.hi is None else _num(self.hi)
        return f"in {'(' if self.lo_open or self.lo is None else '['}{lo}, {hi}" \
               f"{')' if self.hi_open or self.hi is None else ']'}"

    def admits(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return False
        return not (self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)))


Limits = Mapping[str, Limit]


def between(lo: float | None, hi: float | None, *, lo_open: bool = False, hi_open: bool = False,
            min_len: int | None = None, max_len: int | None = None) -> Limit:
    return Limit(lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, min_len=min_len, max_len=max_len)


def one_of(*choices: Any) -> Limit:
    return Limit(choices=tuple(choices))


SEED = between(0, INT64_MAX)  # a non-negative int64: numpy's SeedSequence refuses negatives
INT64 = between(-(2**63), INT64_MAX)


def _num(x: float) -> str:
    if isinstance(x, int) and abs(x) >= 10**6:
        exact = {2**63 - 1: "2^63 - 1", -(2**63): "-2^63"}.get(x)
        return exact or str(x)
    return repr(x)


@functools.cache
def field_rules(cls: type) -> dict[str, tuple[Any, Limit | None]]:
    """name -> (resolved type annotation, limit or None) for every dataclass field of ``cls``;
    the ``LIMITS`` tables of its bases are merged, the subclass's entries winning."""
    hints = typing.get_type_hints(cls)
    limits: dict[str, Limit] = {}
    for klass in reversed(cls.__mro__):
        limits.update(vars(klass).get("LIMITS", {}))
    names = {f.name for f in dataclasses.fields(cls)}
    stray = sorted(set(limits) - names)
    if stray:
        raise TypeError(f"{cls.__qualname__}.LIMITS names {stray}, which are not its fields")
    return {name: (hints[name], limits.get(name)) for name in sorted(names)}


def table_of(obj: Any) -> str:
    return getattr(obj, "TABLE", "") or type(obj).__name__


def check_config(obj: Any, table: str | None = None) -> None:
    """Check (and normalise lists to tuples in) every field of the dataclass ``obj``."""
    table = table or table_of(obj)
    for name, (kind, limit) in field_rules(type(obj)).items():
        value = getattr(obj, name)
        checked = check_value(kind, limit, value, f"[{table}] {name}")
        if checked is not value:
            object.__setattr__(obj, name, checked)


def check_values(cls: type, values: Mapping[str, Any], table: str) -> None:
    """Check a partial table of ``cls`` fields (overrides applied later): unknown keys are
    refused by name, each value by its field's type and range; cross-field rules wait for the
    whole config."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"[{table}] must be a table of key = value pairs, got {values!r}")
    rules = field_rules(cls)
    unknown = sorted(set(values) - set(rules))
    if unknown:
        raise ConfigError(unknown_keys_message(table, unknown, rules))
    for name, value in values.items():
        kind, limit = rules[name]
        check_value(kind, limit, value, f"[{table}] {name}")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'lr'?)`` when a choice is close to ``word`` (a typo), else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_keys_message(table: str, unknown: Iterable[str], known: Iterable[str]) -> str:
    """``unknown [train] key 'stpes' (did you mean 'steps'?); known: ...``: one wording for
    every config reader, so a typo reads the same from a file, a flag or ``--set``."""
    unknown, known = sorted(unknown), sorted(set(known))
    names = ", ".join(f"{k!r}{did_you_mean(k, known)}" for k in unknown)
    return (f"unknown [{table}] key{'s' if len(unknown) > 1 else ''} {names}; "
            f"known: {', '.join(known)}")


def _fail(key: str, value: Any, must: str) -> ConfigError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ConfigError(f"{key} = {shown}: must be {must}")


def _scalar_name(kind: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        kind, f"a {getattr(kind, '__name__', kind)}")


def _must(kind: Any, limit: Limit | None) -> str:
    """'an integer in [1, 10]', 'a list of 2 numbers, each in [0, 1)', ..."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    rule = limit.describe() if limit else ""
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = _must(rest[0], limit) if len(rest) == 1 else " or ".join(_must(a, None) for a in rest)
        return f"{inner}, or null (unset)"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            size = ""
            if limit and (limit.min_len or limit.max_len):
                size = f" ({limit.min_len or 0} to {limit.max_len if limit.max_len else 'any'} items)"
            return f"a list of {_plural(args[0])}{size}" + (f", each {rule}" if _has_range(limit) else "")
        kinds = set(args)
        if len(kinds) == 1:
            return f"a list of {len(args)} {_plural(args[0])}" + (f", each {rule}" if _has_range(limit) else "")
        return f"a list of {len(args)} items ({', '.join(_scalar_name(a) for a in args)})"
    if origin in (dict, Mapping) or kind is dict:
        return "a table (key = value pairs)"
    if limit is not None and limit.choices is not None:
        return rule
    return f"{_scalar_name(kind)}{' ' + rule if rule else ''}"


def _has_range(limit: Limit | None) -> bool:
    return limit is not None and (limit.choices is not None or limit.lo is not None or limit.hi is not None)


def _plural(kind: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(kind, "items")


def check_value(kind: Any, limit: Limit | None, value: Any, key: str) -> Any:
    """``value`` if it fits ``kind`` and ``limit`` (lists become tuples), else ConfigError."""
    try:
        return _check(kind, limit, value, key)
    except ConfigError:
        raise
    except (TypeError, ValueError, OverflowError):  # e.g. comparing an odd value to a bound
        raise _fail(key, value, _must(kind, limit)) from None


def _check(kind: Any, limit: Limit | None, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        for option in rest:
            if _fits_type(option, value):
                return _check(option, limit, value, key)
        raise _fail(key, value, _must(kind, limit))
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _fail(key, value, _must(kind, limit))
    if origin is tuple:
        return _check_tuple(kind, args, limit, value, key)
    if origin in (dict, Mapping) or kind is dict:
        if isinstance(value, dict):
            return value
        raise _fail(key, value, _must(kind, limit))
    if isinstance(kind, type) and kind not in (int, float, str, bool):
        if isinstance(value, kind):
            return value
        raise _fail(key, value, _must(kind, limit))
    if not _fits_type(kind, value) or (limit is not None and not limit.admits(value)):
        raise _fail(key, value, _must(kind, limit))
    return _plain(value)


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (JSON and TOML writers take those only)."""
    if type(value) in (int, float, str, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    return float(value) if isinstance(value, numbers.Real) else value


def _check_tuple(kind: Any, args: tuple[Any, ...], limit: Limit | None, value: Any, key: str) -> Any:
    if not isinstance(value, (list, tuple)):
        raise _fail(key, value, _must(kind, limit))
    if len(args) == 2 and args[1] is Ellipsis:
        element_kinds = [args[0]] * len(value)
        lo = limit.min_len if limit and limit.min_len is not None else 0
        hi = limit.max_len if limit and limit.max_len is not None else math.inf
        if not lo <= len(value) <= hi:
            raise _fail(key, value, _must(kind, limit))
    else:
        element_kinds = list(args)
        if len(value) != len(args):
            raise _fail(key, value, _must(kind, limit))
    element_limit = None if limit is None else dataclasses.replace(limit, min_len=None, max_len=None)
    for element_kind, element in zip(element_kinds, value):
        if not _fits_type(element_kind, element) or (
                element_limit is not None and not element_limit.admits(element)):
            raise _fail(key, value, _must(kind, limit))
    plain = tuple(_plain(v) for v in value)
    return value if isinstance(value, tuple) and all(a is b for a, b in zip(plain, value)) else plain


def _fits_type(kind: Any, value: Any) -> bool:
    """The type part of the rules (module docstring) for a scalar ``kind``."""
    if kind is bool:
        return type(value) is bool
    if kind is int:  # numpy integers too (numbers.Integral); numpy's bool_ is not one
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        try:
            return math.isfinite(value)
        except OverflowError:  # an int beyond float range
            return False
    if kind is str:
        return isinstance(value, str)
    if typing.get_origin(kind) is Literal:  # one of a union's options: int | Literal["trained"]
        return any(value == a and type(value) is type(a) for a in typing.get_args(kind))
    if typing.get_origin(kind) is tuple:
        return isinstance(value, (list, tuple))
    if typing.get_origin(kind) in (dict, Mapping) or kind is dict:
        return isinstance(value, dict)
    if kind is Any:
        return True
    return isinstance(kind, type) and isinstance(value, kind)
