"""Per-step checksums of the latent step fields, beside the per-field ones in every record.

A reader that fetched a few steps of a record (Zarr partial reads, issue 18) cannot check a
checksum over all stored steps; each stored step's own checksum lets it check what it read.
Keys are ``"<field>[<position along S>]"``; they are computed over the values, whatever codec
stores them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..checksum import tensor_checksum
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
