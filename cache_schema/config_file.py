"""Config files read with a bound: a regular file (or an object), at most ``MAX_CONFIG_BYTES``.

A config path comes from the user or from another file (``include = "..."``), so it may name a
folder, a device (``/dev/zero`` grows without end), a FIFO (blocks forever) or a huge file.
``read_config`` checks what the path is before opening it and never reads more than the cap
plus one byte; each refusal is one ``ConfigFileError`` (a ValueError) naming the file.
"""

from __future__ import annotations

import os
import stat
import tomllib
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
