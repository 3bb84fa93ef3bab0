"""The value codecs a cache layout may name (as ``encodings/registry.py`` for encodings).

The one place that lists the built-in codecs; everything else asks ``get_codec(name)`` or
``codec_names()`` (the CLI's ``choices``). A new codec is its own file plus one
``register_codec`` call.
"""

from __future__ import annotations

from ..errors import CacheError
from .base import Codec
from .plain import Raw, Zstd
from .trajectory import Trajectory

_CODECS: dict[str, Codec] = {}
DEFAULT_CODEC = Raw.name


class UnknownCodec(CacheError, ValueError):
    """A layout or a flag names a codec this build does not know."""


def register_codec(codec: Codec, *, replace: bool = False) -> Codec:
    if not isinstance(codec, Codec):
        raise TypeError(f"register_codec takes a Codec instance, got {codec!r}")
    name = codec.name
    if not name or "/" in name or name != name.strip():
        raise ValueError(f"bad codec name {name!r}: a short word a layout can carry")
    if name in _CODECS and not replace:
        raise ValueError(f"codec {name!r} is already registered; pass replace=True to swap it")
    _CODECS[name] = codec
    return codec


def unregister_codec(name: str) -> None:
    if _CODECS.pop(name, None) is None:
        raise UnknownCodec(_unknown(name))


def get_codec(name: str) -> Codec:
    try:
        return _CODECS[name]
    except (KeyError, TypeError):
        raise UnknownCodec(_unknown(name)) from None


def codec_names() -> tuple[str, ...]:
    return tuple(_CODECS)


def _unknown(name: object) -> str:
    return (f"unknown cache codec {name!r}: use one of {', '.join(_CODECS)} (a new codec is "
            "registered with cache_schema.codecs.register_codec)")


for _builtin in (Raw(), Zstd(), Trajectory()):
    register_codec(_builtin)
