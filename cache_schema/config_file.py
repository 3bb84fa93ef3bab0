"""Config files read with a bound: a regular file (or an object), at most ``MAX_CONFIG_BYTES``.

A config path comes from the user or from another file (``include = "..."``), so it may name a
folder, a device (``/dev/zero`` grows without end), a FIFO (blocks forever) or a huge file.
``read_config`` checks what the path is before opening it and never reads more than the cap
plus one byte; each refusal is one ``ConfigFileError`` (a ValueError) naming the file.

``load_table`` is the one reader of a config file's table for every command (run configs, the
job, the training stages): ``include = "FILE"`` in a table is resolved here, so a recipe file
serves `s2dit run`, `s2dit cache generate` and `s2dit train` alike.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

MAX_CONFIG_BYTES = 1 << 20  # configs are a few KiB; a prompt list inline stays far below


class ConfigFileError(ValueError):
    """A config file that is not a regular file, too large, or not TOML."""


def _local_kind(path: str) -> str | None:
    """What ``path`` is when it is not a regular file ("a folder", "a device", ...), else None."""
    mode = os.stat(path).st_mode  # follows links: a link to a regular file is fine
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    return "not a regular file"


def read_config(url: str, what: str = "config") -> bytes:
    """The bytes of config file ``url`` (a path or fsspec URL); ConfigFileError if it is not a
    regular file or holds more than ``MAX_CONFIG_BYTES``; FileNotFoundError if absent."""
    fs, path = fsspec.core.url_to_fs(url)
    if isinstance(fs, LocalFileSystem):
        try:
            kind = _local_kind(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{what} {url} does not exist") from None
        if kind:
            raise ConfigFileError(f"{what} {url} is {kind}, not a file: give a .toml file")
        # O_NONBLOCK: should it turn into a FIFO between the check and the open, no hang
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    else:
        try:
            info = fs.info(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{what} {url} does not exist") from None
        if info.get("type") != "file":
            raise ConfigFileError(f"{what} {url} is a folder, not a file: give a .toml file")
        data = fs.cat_file(path, start=0, end=MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigFileError(f"{what} {url} is larger than {MAX_CONFIG_BYTES >> 20} MiB; a "
                              "config is a few KiB: is it the right file?")
    return data


def load_toml(url: str, what: str = "config") -> dict[str, Any]:
    """``read_config`` then TOML (UTF-8); ConfigFileError naming the file otherwise."""
    data = read_config(url, what)
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigFileError(f"{what} {url} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{what} {url} is not valid TOML: {exc}") from None


def load_table(url: str, table: str, what: str = "config", *,
               drop: Iterable[str] = ()) -> dict[str, Any] | None:
    """The ``[table]`` of config file ``url`` with its include resolved (``resolve_include``),
    or None if the file has no such table."""
    data = load_toml(url, what)
    if table not in data:
        return None
    section = data[table]
    if not isinstance(section, dict):
        raise ConfigFileError(f"{what} {url}: [{table}] must be a table, got {section!r}")
    return resolve_include(url, table, section, drop=drop)


def resolve_include(url: str, table: str, section: dict[str, Any], *,
                    drop: Iterable[str] = ()) -> dict[str, Any]:
    """``section`` (the ``[table]`` of file ``url``) with ``include = "FILE"`` resolved: FILE's
    ``[table]`` is the base (less its ``drop`` keys) and this section's keys override it,
    sub-tables merged key by key. One level only: the base may not include again."""
    section = dict(section)
    include = section.pop("include", None)
    if include is None:
        return section
    if not isinstance(include, str):
        raise ConfigFileError(f"[{table}] include in {url} must be a file name, got {include!r}")
    target = beside(url, include)
    try:
        data = load_toml(target, "include")
    except (FileNotFoundError, ConfigFileError) as exc:  # name the including file and table too
        raise type(exc)(f"[{table}] of {url}: {exc}") from None
    if table not in data:
        tables = sorted(k for k, v in data.items() if isinstance(v, dict))
        raise ConfigFileError(f"[{table}] of {url} includes {target}, which has no [{table}] "
                              f"table (it has {tables})")
    base = data[table]
    if not isinstance(base, dict):
        raise ConfigFileError(f"[{table}] of {url} includes {target}, whose {table} is not a "
                              f"table: {base!r}")
    if "include" in base:  # a chain of recipes would hide where a value comes from
        raise ConfigFileError(f"[{table}] of {url} includes {target}, whose [{table}] includes "
                              "another file: one level only")
    for key in drop:
        base.pop(key, None)
    return merged(base, section)


def beside(url: str, include: str) -> str:
    """``include`` as written if absolute (a path or URL), else relative to ``url``'s folder."""
    if "://" in include or include.startswith("/"):
        return include
    if "://" in url:
        return posixpath.join(posixpath.dirname(url), include)
    return str(Path(url).parent / include)


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over``'s values, tables merged key by key (an include's ``[train.model]``
    keeps the keys this file does not set; so does ``--set train.model.dim=64``)."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merged(out[key], value) if both else value
    return out
