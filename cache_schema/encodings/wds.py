"""WebDataset encoding: one tar shard, one member per field, readable by stock webdataset/tar.

Members of a sample ``<sample_id>``: ``.meta.json`` (seed, per-tensor checksums), ``.prompt.txt``,
``.negative_prompt.txt`` and ``.<field>.npy`` per tensor. Tars are deterministic (fixed mtime,
owner and member order) so the same records always give the same bytes. A shard is one object.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, ClassVar

import numpy as np

from ..bounds import bounded_stream, layout_problem, parse_record_meta
from ..checksum import record_checksums
from ..fields import CHECKSUMS_KEY, FIELD_BY_NAME, CacheLayout, FieldKind
from ..store import Store
from .base import SINGLE_OBJECT, Encoding, Selection
from .common import slice_steps, step_positions
from .meter import ReadMeter
from .step_checksums import without_step_checksums
from .tar_stock import np_load, tarfile_members, webdataset_members
from .ustar import encode_tar, iter_members, npy_from_bytes, npy_header

Members = Callable[[IO[bytes]], Iterator[tuple[str, bytes]]]
# name: (tar member reader, .npy decoder). "ustar" (with its tarfile fallback) is the default;
# the stock ones are kept selectable for measurement (issue 13, bench/bench_loader.py --parser).
PARSERS: dict[str, tuple[Members, Callable[[bytes], np.ndarray]]] = {
    "ustar": (iter_members, npy_from_bytes),
    "tarfile": (tarfile_members, np_load),
    "webdataset": (webdataset_members, np_load),
}

# Large sequential reads: one request per 8 MiB instead of fsspec's 5 MiB default readahead.
STREAM_BLOCK = 8 * 2**20
# Object stores charge a request's latency (and some servers a pass over the object) per
# ranged GET: a shard of a few hundred MB is read in a handful of requests.
REMOTE_STREAM_BLOCK = 64 * 2**20


def encode_shard(records: Sequence[dict[str, Any]]) -> bytes:
    """One tar of ``records``: a member per field, tensors as .npy over the arrays' own memory
    (one copy, into the archive). Deterministic: the same records give the same bytes."""
    members: list[tuple[str, list[bytes | memoryview | np.ndarray]]] = []
    for record in records:
        key = record["sample_id"]
        # Whole tensors only: a tar is read whole, so per-step checksums would be dead weight.
        sums = without_step_checksums(record.get(CHECKSUMS_KEY) or record_checksums(record))
        meta = {"sample_id": key, "seed": int(record["seed"]), CHECKSUMS_KEY: sums}
        members.append((f"{key}.meta.json", [json.dumps(meta, sort_keys=True).encode()]))
        for name in ("prompt", "negative_prompt"):
            members.append((f"{key}.{name}.txt", [record[name].encode("utf-8")]))
        for name, value in record.items():
            spec = FIELD_BY_NAME.get(name)
            if spec is not None and spec.kind is FieldKind.TENSOR:
                array = np.ascontiguousarray(value)
                members.append((f"{key}.{name}.npy",
                                [npy_header(array), array.reshape(-1).view(np.uint8)]))
    return encode_tar(members)


def _decode_member(suffix: str, data: bytes, npy: Callable[[bytes], np.ndarray]
                   ) -> tuple[str, Any]:
    name, _, ext = suffix.rpartition(".")
    if ext == "npy":
        return name, npy(data)
    if ext == "txt":
        return name, data.decode("utf-8")
    return name, parse_record_meta(data, suffix)


def iter_shard(stream: IO[bytes], layout: CacheLayout, fields: Sequence[str],
               steps: Sequence[int] | None = None, *, parser: str = "ustar"
               ) -> Iterator[dict[str, Any]]:
    """Stream records from an open tar file object; only ``fields`` are decoded."""
    members, npy = PARSERS[parser]
    positions = step_positions(layout, steps)
    wanted = set(fields)
    current_key: str | None = None
    record: dict[str, Any] = {}
    for member_name, data in members(stream):
        key, _, suffix = member_name.partition(".")
        if key != current_key:
            if record:
                yield slice_steps(record, positions)
            current_key, record = key, {}
        field = suffix.rsplit(".", 1)[0]
        if field != "meta" and field not in wanted:
            continue
        name, value = _decode_member(suffix, data, npy)
        if name == "meta":
            record["sample_id"] = value["sample_id"]
            if "seed" in wanted:
                record["seed"] = value["seed"]
            record[CHECKSUMS_KEY] = value[CHECKSUMS_KEY]
        else:
            record[name] = value
    if record:
        yield slice_steps(record, positions)


class WebDataset(Encoding):
    """Tar shards of records, one member per field (DESIGN 3.4); best for sequential streaming."""

    name = "wds"
    suffix = ".tar"
    read_errors: ClassVar[tuple[type[BaseException], ...]] = (*Encoding.read_errors,
                                                              tarfile.TarError)

    def __init__(self, parser: str = "ustar"):
        if parser not in PARSERS:
            raise ValueError(f"unknown tar parser {parser!r}: use one of {', '.join(PARSERS)}")
        self.parser = parser

    def check_codec(self, codec: str) -> None:
        _raw_only(codec)

    def check_layout(self, layout: CacheLayout) -> None:
        super().check_layout(layout)
        problem = layout_problem(layout)  # what a tar reader accepts, refused before any work
        if problem:
            raise ValueError(f"the wds encoding cannot store this layout: {problem}")

    def encode(self, records: Sequence[dict[str, Any]], layout: CacheLayout) -> dict[str, bytes]:
        _raw_only(layout.codec)
        return {SINGLE_OBJECT: encode_shard(records)}

    def iter_records(self, store: Store, path: str, layout: CacheLayout, fields: Sequence[str],
                     steps: Sequence[int] | None = None, *, select: Selection | None = None,
                     meter: ReadMeter | None = None) -> Iterator[dict[str, Any]]:
        _raw_only(layout.codec)
        block = STREAM_BLOCK if store.is_local else REMOTE_STREAM_BLOCK
        with store.fs.open(store.path(path), "rb", block_size=block) as stream:
            yield from iter_shard(bounded_stream(stream, layout, store.url_of(path)), layout,
                                  fields, steps, parser=self.parser)
        if meter is not None:  # a tar is streamed whole: every byte of it moves
            meter.add(store.size(path))


def _raw_only(codec: str) -> None:
    if codec != "raw":
        raise ValueError(f"the wds encoding stores plain .npy members only (codec raw), not "
                         f"codec {codec!r}: set encoding = 'zarr' (--encoding zarr) for {codec}, or "
                         "codec = 'raw' (--codec raw)")
