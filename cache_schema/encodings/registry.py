"""The encodings a manifest may name, keyed by that name (mosaicml/streaming's reader registry).

This is the one place that lists the built-in encodings. Everything else (writer, reader,
verify, transfer, convert, the CLI's ``choices``) asks ``get_encoding(name)`` or
``encoding_names()``; a new encoding is its own file plus one ``register_encoding`` call.
"""

from __future__ import annotations

from ..errors import UnknownEncoding
from .base import Encoding
from .wds import WebDataset
from .zarr_shard import Zarr

_ENCODINGS: dict[str, Encoding] = {}
DEFAULT_ENCODING = WebDataset.name


def register_encoding(encoding: Encoding, *, replace: bool = False) -> Encoding:
    """Make ``encoding`` readable and writable under ``encoding.name``; returns it.

    A name already taken is refused unless ``replace`` (e.g. a benchmark swapping a parser)."""
    if not isinstance(encoding, Encoding):
        raise TypeError(f"register_encoding takes an Encoding instance, got {encoding!r}")
    name = encoding.name
    if not name or "/" in name or name != name.strip():
        raise ValueError(f"bad encoding name {name!r}: a short word a manifest can carry")
    if name in _ENCODINGS and not replace:
        raise ValueError(f"encoding {name!r} is already registered "
                         f"({type(_ENCODINGS[name]).__name__}); pass replace=True to swap it")
    _ENCODINGS[name] = encoding
    return encoding


def unregister_encoding(name: str) -> None:
    """Remove a registered encoding (tests and plugins clean up with this)."""
    if _ENCODINGS.pop(name, None) is None:
        raise UnknownEncoding(_unknown(name))


def get_encoding(name: str) -> Encoding:
    """The encoding a manifest or a config names; UnknownEncoding lists the known ones."""
    try:
        return _ENCODINGS[name]
    except (KeyError, TypeError):
        raise UnknownEncoding(_unknown(name)) from None


def encoding_names() -> tuple[str, ...]:
    """Registered encoding names, in registration order (the CLI's ``choices``)."""
    return tuple(_ENCODINGS)


def _unknown(name: object) -> str:
    return (f"unknown encoding {name!r}: use one of {', '.join(_ENCODINGS)} (a new encoding is "
            "registered with cache_schema.register_encoding)")


for _builtin in (WebDataset(), Zarr()):
    register_encoding(_builtin)
