"""The value codecs a cache layout may name (a ``Registry``, as encodings are).

The one place that lists the built-in codecs; everything else asks ``get_codec(name)`` or
``codec_names()`` (the CLI's ``choices``). A new codec is its own file plus one
``register_codec`` call.
"""

from __future__ import annotations

from ..errors import CacheError
from ..registry import Registry
from .base import Codec
from .plain import Raw, Zstd
from .trajectory import Trajectory

DEFAULT_CODEC = Raw.name


class UnknownCodec(CacheError, ValueError):
    """A layout or a flag names a codec this build does not know."""


CODECS: Registry[Codec] = Registry(
    "cache codec", what="a layout", unknown=UnknownCodec,
    hint="a new codec is registered with cache_schema.codecs.register_codec")


def register_codec(codec: Codec, *, replace: bool = False) -> Codec:
    if not isinstance(codec, Codec):
        raise TypeError(f"register_codec takes a Codec instance, got {codec!r}")
    return CODECS.register(codec.name, codec, replace=replace)


def get_codec(name: str) -> Codec:
    return CODECS.get(name)


def codec_names() -> tuple[str, ...]:
    return CODECS.names()


for _builtin in (Raw(), Zstd(), Trajectory()):
    register_codec(_builtin)
