"""``raw`` (values as they are: any stock reader sees plain arrays) and ``zstd`` (values
byte-shuffled and zstd-coded by Blosc: stock zarr still decodes plain arrays)."""

from __future__ import annotations

from typing import ClassVar

import numcodecs

from .base import Codec

# Byte shuffle puts the high (sign + exponent) bytes of 16-bit floats together, which zstd
# codes far better than interleaved bytes (measured: 0.68x vs 0.87x raw on analytic latents).
ZSTD_LEVEL = 5


def blosc_zstd() -> numcodecs.Blosc:
    return numcodecs.Blosc(cname="zstd", clevel=ZSTD_LEVEL, shuffle=numcodecs.Blosc.SHUFFLE,
                           blocksize=0)


class Raw(Codec):
    name: ClassVar[str] = "raw"


class Zstd(Codec):
    name: ClassVar[str] = "zstd"

    def compressor(self):
        return blosc_zstd()
