"""Per-tensor checksums (inside records) and per-shard sha256 (in manifests)."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from .fields import FIELD_BY_NAME, FieldKind


def tensor_checksum(array: np.ndarray) -> str:
    """crc32 of the C-contiguous bytes plus dtype and shape: cheap and catches bit flips."""
    header = f"{array.dtype.str}{array.shape}".encode()
    crc = zlib.crc32(header)
    crc = zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B"), crc)
    return f"{crc:08x}"


def record_checksums(record: Mapping[str, Any]) -> dict[str, str]:
    return {name: tensor_checksum(value) for name, value in record.items()
            if name in FIELD_BY_NAME and FIELD_BY_NAME[name].kind is FieldKind.TENSOR}


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()
