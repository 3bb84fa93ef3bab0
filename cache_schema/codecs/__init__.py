"""Lossless value codecs of the cache's tensors (``raw``, ``zstd``, ``trajectory``) behind one
interface (``base.Codec``) and one registry keyed by ``CacheLayout.codec`` (``registry``)."""

from .base import Codec
from .registry import (
                       DEFAULT_CODEC,
                       UnknownCodec,
                       codec_names,
                       get_codec,
                       register_codec,
)

__all__ = ["DEFAULT_CODEC", "Codec", "UnknownCodec", "codec_names", "get_codec",
           "register_codec"]
