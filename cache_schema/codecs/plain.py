"""``raw`` (values as they are: any stock reader sees plain arrays) and ``zstd`` (values
byte-shuffled and zstd-coded by Blosc: stock zarr still decodes plain arrays)."""

from __future__ import annotations

from typing import ClassVar

import numcodecs

from .base import Codec

# Byte shuffle puts the high (sign + exponent) bytes of 16-bit floats together, which zstd
# codes far better than interleaved bytes (measured: 0.68x vs 0.87x raw on analytic latents).
# Blosc level 1 (zstd level 1) in 1 MiB blocks: at Wan latent sizes as small as level 5 with
# Blosc's automatic blocks (0.243 vs 0.247x on state residuals, 0.846 vs 0.850x on raw
# states) and 8x faster to code (263 vs 31 MB/s, one core; bench/bench_codec.py). Level and
# block size are in each Blosc frame's header: caches coded at level 5 decode unchanged.
ZSTD_LEVEL = 1
BLOCK_BYTES = 1 << 20


def blosc_zstd() -> numcodecs.Blosc:
    return numcodecs.Blosc(cname="zstd", clevel=ZSTD_LEVEL, shuffle=numcodecs.Blosc.SHUFFLE,
                           blocksize=BLOCK_BYTES)


class Raw(Codec):
    name: ClassVar[str] = "raw"


class Zstd(Codec):
    name: ClassVar[str] = "zstd"

    def compressor(self):
        return blosc_zstd()
