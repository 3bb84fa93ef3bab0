"""Per-field checksums (inside records) and per-shard sha256 (in manifests).

Every schema field of a record has a checksum, not only the tensors: text and ids too (a prompt
or sample id altered inside a shard is caught by ``verify --deep`` and by every verifying
read). A record written before text checksums carries tensor checksums only; a field without a
stored checksum is simply not compared (``check_record_checksums``).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import IntegrityError
from .fields import FIELD_BY_NAME


def tensor_checksum(value: Any) -> str:
    """crc32 of a field value: for an array its C-contiguous bytes plus dtype and shape (cheap,
    catches bit flips); for text its UTF-8 bytes, for an integer its int64 bytes, each under a
    prefix of its kind so a text can never collide with an array of the same bytes."""
    if isinstance(value, str):
        return f"{zlib.crc32(value.encode('utf-8', 'surrogatepass'), zlib.crc32(b'text:')):08x}"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        data = int(value).to_bytes(8, "little", signed=True)
        return f"{zlib.crc32(data, zlib.crc32(b'int64:')):08x}"
    array = value
    header = f"{array.dtype.str}{array.shape}".encode()
    crc = zlib.crc32(header)
    crc = zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B"), crc)
    return f"{crc:08x}"


field_checksum = tensor_checksum  # the name that says what it covers


def record_checksums(record: Mapping[str, Any]) -> dict[str, str]:
    """{field: checksum} of every schema field present in ``record``."""
    return {name: tensor_checksum(value) for name, value in record.items()
            if name in FIELD_BY_NAME}


def check_record_checksums(record: Mapping[str, Any], sums: Mapping[str, str], shard: str) -> int:
    """Compare every schema field of ``record`` that has a stored checksum; IntegrityError names
    shard, sample and field. Step-sliced reads compare nothing for per-step tensors (their
    checksums cover all stored steps). Returns the number of fields compared."""
    checked = 0
    for name, value in record.items():
        if name not in FIELD_BY_NAME or name not in sums:
            continue
        if tensor_checksum(value) != sums[name]:
            raise IntegrityError(f"shard {shard}: sample {record.get('sample_id')} field {name} "
                                 "fails its checksum (silent corruption)", shard=shard,
                                 sample_id=record.get("sample_id"))
        checked += 1
    return checked


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()
