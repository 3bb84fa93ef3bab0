"""The encodings a manifest may name, keyed by that name (mosaicml/streaming's reader registry).

This is the one place that lists the built-in encodings. Everything else (writer, reader,
verify, transfer, convert, the CLI's ``choices``) asks ``get_encoding(name)`` or
``encoding_names()``; a new encoding is its own file plus one ``register_encoding`` call.
"""

from __future__ import annotations

from ..errors import UnknownEncoding
from ..registry import Registry
from .base import Encoding
from .wds import WebDataset
from .zarr_shard import Zarr

DEFAULT_ENCODING = WebDataset.name

ENCODINGS: Registry[Encoding] = Registry(
    "encoding", what="a manifest", unknown=UnknownEncoding,
    hint="a new encoding is registered with cache_schema.register_encoding",
    describe=lambda encoding: type(encoding).__name__)


def register_encoding(encoding: Encoding, *, replace: bool = False) -> Encoding:
    """Make ``encoding`` readable and writable under ``encoding.name``; returns it.

    A name already taken is refused unless ``replace`` (e.g. a benchmark swapping a parser)."""
    if not isinstance(encoding, Encoding):
        raise TypeError(f"register_encoding takes an Encoding instance, got {encoding!r}")
    return ENCODINGS.register(encoding.name, encoding, replace=replace)


def unregister_encoding(name: str) -> None:
    """Remove a registered encoding (tests and plugins clean up with this)."""
    ENCODINGS.unregister(name)


def get_encoding(name: str) -> Encoding:
    """The encoding a manifest or a config names; UnknownEncoding lists the known ones."""
    return ENCODINGS.get(name)


def encoding_names() -> tuple[str, ...]:
    """Registered encoding names, in registration order (the CLI's ``choices``)."""
    return ENCODINGS.names()


for _builtin in (WebDataset(), Zarr()):
    register_encoding(_builtin)
