"""A checkpoint's tensors checked against the model that will hold them, before loading.

A checkpoint is a file someone hands over: its safetensors header (names, dtypes, shapes, byte
ranges) is read and bounded first (``read_header``), compared with the modules' own
``state_dict`` (``check_modules``: missing, unexpected, shape, dtype), and only then are the
bytes turned into tensors, whose floating values must be finite (``check_finite``). Each
problem is one ``CheckpointMismatch`` line naming the first tensor that differs, instead of
``load_state_dict``'s many-line traceback or a model that samples NaN.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

MAX_HEADER_BYTES = 16 << 20  # safetensors' own cap is 100 MB; ours hold a few thousand tensors
MAX_DIMS = 8
# safetensors dtype names -> (torch dtype, bytes per element)
DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2), "I64": (torch.int64, 8), "I32": (torch.int32, 4),
    "I16": (torch.int16, 2), "I8": (torch.int8, 1), "U8": (torch.uint8, 1), "BOOL": (torch.bool, 1),
}


class CheckpointMismatch(ValueError):
    """A checkpoint whose tensors do not fit the model (a ValueError: one ``error:`` line)."""


@dataclass(frozen=True, slots=True)
class TensorInfo:
    dtype: torch.dtype
    shape: tuple[int, ...]


def _named(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(not p or name.startswith(p + ".") for p in prefixes)


def _fail(where: str, what: str) -> CheckpointMismatch:
    return CheckpointMismatch(f"checkpoint {where}: {what}")


def read_header(payload: bytes, where: str) -> dict[str, TensorInfo]:
    """The tensors a safetensors ``payload`` declares, each checked against its byte range
    (nothing is allocated for a tensor before this passes)."""
    if len(payload) < 8:
        raise _fail(where, "tensors file shorter than its 8-byte header length")
    size = int.from_bytes(payload[:8], "little")
    if size > MAX_HEADER_BYTES or 8 + size > len(payload):
        raise _fail(where, f"tensors header of {size} bytes (file {len(payload)} bytes, cap "
                           f"{MAX_HEADER_BYTES >> 20} MiB)")
    try:
        header = json.loads(payload[8:8 + size])
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _fail(where, f"tensors header is not JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise _fail(where, "tensors header is not a JSON object")
    data_bytes = len(payload) - 8 - size
    out: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shown = name if len(name) <= 80 else name[:77] + "..."
        if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str) \
                or entry["dtype"] not in DTYPES:
            raise _fail(where, f"tensor {shown!r}: no known dtype in its header entry")
        dtype, itemsize = DTYPES[entry["dtype"]]
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if (not isinstance(shape, list) or len(shape) > MAX_DIMS
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in shape)):
            raise _fail(where, f"tensor {shown!r}: shape {str(shape)[:60]} is not a list of "
                               f"at most {MAX_DIMS} sizes")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data_bytes
                or offsets[1] - offsets[0] != math.prod(shape) * itemsize):
            raise _fail(where, f"tensor {shown!r}: byte range {str(offsets)[:60]} does not hold "
                               f"shape {shape} of {entry['dtype']}")
        out[name] = TensorInfo(dtype, tuple(shape))
    return out


def check_modules(header: Mapping[str, TensorInfo], modules: Mapping[str, torch.nn.Module],
                  where: str, fix: str) -> None:
    """Every tensor of each module (under its prefix, ``prefix.name``) is in ``header`` with
    its shape and dtype, and the header has no other tensor under these prefixes. ``fix``:
    what the user can do, appended to the message."""
    for prefix, module in modules.items():  # prefix "": the header holds this module alone
        expected = {_named(prefix, k): TensorInfo(v.dtype, tuple(v.shape))
                    for k, v in module.state_dict().items()}
        found = {k: v for k, v in header.items() if _under(k, (prefix,))}
        for name in sorted(expected):
            if name not in found:
                raise _fail(where, f"tensor {name} is missing ({len(found)} tensors present, "
                                   f"the model has {len(expected)}); {fix}")
            want, got = expected[name], found[name]
            if got.shape != want.shape:
                raise _fail(where, f"tensor {name} has shape {list(got.shape)}, the model expects "
                                   f"{list(want.shape)}; {fix}")
            if got.dtype != want.dtype:
                raise _fail(where, f"tensor {name} is {got.dtype}, the model expects "
                                   f"{want.dtype}; {fix}")
        extra = sorted(set(found) - set(expected))
        if extra:
            raise _fail(where, f"tensor {extra[0][:80]} is not part of the model "
                               f"({len(extra)} unexpected tensors); {fix}")


def check_finite(tensors: Mapping[str, torch.Tensor], prefixes: tuple[str, ...], where: str) -> None:
    """The floating tensors under ``prefixes`` hold no NaN or infinity."""
    for name in sorted(tensors):
        value = tensors[name]
        if (_under(name, prefixes) and value.is_floating_point()
                and not bool(torch.isfinite(value).all())):
            raise _fail(where, f"tensor {name} holds NaN or infinite values; use an earlier "
                               "checkpoints/step_N (training diverged, or the file was altered)")
