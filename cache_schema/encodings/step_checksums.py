"""Per-step checksums of the latent step fields, beside the per-field ones in every record.

A reader that fetched a few steps of a record (Zarr partial reads, issue 18) cannot check a
checksum over all stored steps; each stored step's own checksum lets it check what it read.
Keys are ``"<field>[<position along S>]"``; they are computed over the values, whatever codec
stores them.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np

from ..checksum import record_checksums, tensor_checksum
from ..fields import FIELD_BY_NAME, FieldKind


def step_checksum_key(name: str, position: int) -> str:
    return f"{name}[{position}]"


def is_step_key(key: str) -> bool:
    return key.endswith("]")


def without_step_checksums(sums: Mapping[str, str]) -> dict[str, str]:
    """The per-field checksums only (an encoding without partial reads stores just those)."""
    return {k: v for k, v in sums.items() if not is_step_key(k)}


def step_checksums(record: Mapping[str, Any]) -> dict[str, str]:
    """{"states[3]": crc, ...} for every stored step of the latent step fields of ``record``."""
    out = {}
    for name, value in record.items():
        spec = FIELD_BY_NAME.get(name)
        if spec is not None and spec.per_step and spec.kind is FieldKind.TENSOR and value.ndim > 1:
            out.update({step_checksum_key(name, k): tensor_checksum(value[k])
                        for k in range(value.shape[0])})
    return out


# -- one pass for both (issue 18 at Wan size: the per-field and per-step crcs were two passes) --
_CRC_POLY = 0xEDB88320


def _gf2_times(matrix: tuple[int, ...], vector: int) -> int:
    out, i = 0, 0
    while vector:
        if vector & 1:
            out ^= matrix[i]
        vector >>= 1
        i += 1
    return out


def _gf2_square(matrix: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(_gf2_times(matrix, row) for row in matrix)


@lru_cache(maxsize=64)
def _shift_operator(length: int) -> tuple[int, ...]:
    """The GF(2) matrix that moves a crc32 past ``length`` zero bytes (zlib's crc32_combine,
    as one matrix per length: steps of one field share it)."""
    op = (_CRC_POLY, *(1 << n for n in range(31)))  # one zero bit
    for _ in range(3):  # one zero byte
        op = _gf2_square(op)
    result = None
    while length:
        if length & 1:
            result = op if result is None else tuple(_gf2_times(op, row) for row in result)
        length >>= 1
        if length:
            op = _gf2_square(op)
    return result if result is not None else tuple(1 << n for n in range(32))


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """crc32(A + B) from crc32(A), crc32(B) and len(B) (zlib.crc32's polynomial and
    conditioning)."""
    return _gf2_times(_shift_operator(length2), crc1) ^ crc2 if length2 else crc1


def _header_crc(value: np.ndarray) -> int:
    return zlib.crc32(f"{value.dtype.str}{value.shape}".encode())


def record_and_step_checksums(record: Mapping[str, Any]) -> dict[str, str]:
    """``{**record_checksums(record), **step_checksums(record)}`` with each step field's bytes
    crc'd once: the field's crc is combined from its steps' (``crc32_combine``), so the stored
    checksums are the same strings ``tensor_checksum`` gives."""
    split = {name: value for name, value in record.items() if name in FIELD_BY_NAME and
             FIELD_BY_NAME[name].per_step and FIELD_BY_NAME[name].kind is FieldKind.TENSOR and
             value.ndim > 1}
    out = record_checksums({k: v for k, v in record.items() if k not in split})
    for name, value in split.items():
        value = np.ascontiguousarray(value)
        whole = _header_crc(value)
        step_header = _header_crc(value[0]) if value.shape[0] else 0
        for k in range(value.shape[0]):
            data = memoryview(value[k]).cast("B")
            crc = zlib.crc32(data)
            out[step_checksum_key(name, k)] = f"{crc32_combine(step_header, crc, len(data)):08x}"
            whole = crc32_combine(whole, crc, len(data))
        out[name] = f"{whole:08x}"
    return out
