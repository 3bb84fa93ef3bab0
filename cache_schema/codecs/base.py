"""The one interface of a lossless value codec of the cache's tensors (issue 18).

An encoding (``encodings/``) decides where bytes go (tar members, Zarr arrays and chunks); a
codec decides what those bytes are: the stored values themselves (``raw``), the values entropy
coded (``zstd``), or residuals against a prediction, entropy coded (``trajectory``). The codec
a cache uses is part of its layout (``CacheLayout.codec``, recorded in every manifest), so a
reader always knows how to decode what it reads, and every decoded tensor is bit-identical to
what the producer wrote (the per-tensor checksums are over the decoded values).

A codec works in two parts an encoding applies in order:

* ``transform`` / ``untransform``: the arrays stored per record for the fields in
  ``transformed`` (e.g. residuals instead of states), plus ``extra`` arrays (e.g. which
  predictor each record used); all other fields are stored as their values;
* ``compressor``: the numcodecs entropy coder of every stored tensor chunk (None: raw bytes).
  Standard zstd / blosc frames, so stock zarr decodes the chunks.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ..fields import CacheLayout


class Codec(ABC):
    """How the tensor values of a record are stored. Instances hold no per-read state."""

    name: ClassVar[str]  # the name CacheLayout.codec carries
    # Step fields (states, v_cond, v_uncond) are stored one chunk per (sample, step), so a reader
    # can fetch only the steps it needs; False: one chunk per (sample, field), all steps (a
    # codec whose steps depend on the previous ones reads them together anyway).
    step_chunks: ClassVar[bool] = True
    transformed: ClassVar[tuple[str, ...]] = ()  # fields stored as something else than values
    depends: ClassVar[tuple[str, ...]] = ()  # value fields ``untransform`` needs
    # Per-record arrays a codec stores beside the fields: {name: (dtype, shape)}.
    extra: ClassVar[dict[str, tuple[str, tuple[int, ...]]]] = {}

    def compressor(self):
        """The numcodecs codec applied to every stored tensor chunk, or None (raw bytes)."""
        return

    def transform(self, record: Mapping[str, Any], layout: CacheLayout) -> dict[str, np.ndarray]:
        """{field or extra name: stored array} for ``transformed`` and ``extra`` (same shape as
        the field for a transformed one); deterministic."""
        return {}

    def untransform(self, stored: Mapping[str, np.ndarray], values: Mapping[str, Any],
                    layout: CacheLayout) -> dict[str, np.ndarray]:
        """The values of ``transformed`` fields from their stored arrays (``stored``, extras
        included) and the value fields in ``depends`` (``values``): bit-exact."""
        return {}

    def needs(self, fields: tuple[str, ...]) -> tuple[str, ...]:
        """The fields to read so that ``fields`` can be decoded (in the order given, then the
        ones added)."""
        if not any(f in self.transformed for f in fields):
            return fields
        extra = [f for f in (*self.transformed, *self.depends) if f not in fields]
        return (*fields, *extra)
