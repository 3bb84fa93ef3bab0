"""A new encoding is one class and one registry call: a toy encoding defined here, registered
here, runs write -> commit -> deep verify -> read (fields, steps) -> convert, touching no other file."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from conftest import FINGERPRINT, make_records, small_layout

from cache_schema import (
    CHECKSUMS_KEY,
    CacheLayout,
    CacheReader,
    CacheWriter,
    Encoding,
    FieldKind,
    IntegrityError,
    UnknownEncoding,
    encoding_names,
    get_encoding,
    load_manifest,
    register_encoding,
    unregister_encoding,
)
from cache_schema.convert import convert
from cache_schema.encodings.common import slice_steps, step_positions
from cache_schema.errors import OperationRefused
from cache_schema.fields import FIELD_BY_NAME
from cache_schema.reader import records_equal
from cache_schema.store import Store
from cache_schema.verify import verify_cache


class JsonLines(Encoding):
    """One JSON line per record; tensors as base64 of their bytes with dtype and shape."""

    name = "toy-jsonl"
    suffix = ".jsonl"

    def encode(self, records: Sequence[dict[str, Any]], layout: CacheLayout) -> dict[str, bytes]:
        lines = []
        for record in records:
            row = {}
            for key, value in record.items():
                if isinstance(value, np.ndarray):
                    value = {"dtype": value.dtype.str, "shape": list(value.shape),
                             "b64": base64.b64encode(np.ascontiguousarray(value).tobytes()).decode()}
                row[key] = value
            lines.append(json.dumps(row, sort_keys=True))
        return {"": "\n".join(lines).encode()}

    def iter_records(self, store: Store, path: str, layout: CacheLayout, fields: Sequence[str],
                     steps: Sequence[int] | None = None) -> Iterator[dict[str, Any]]:
        positions = step_positions(layout, steps)
        for line in store.read_bytes(path).decode().splitlines():
            row = json.loads(line)
            record = {CHECKSUMS_KEY: row[CHECKSUMS_KEY]}
            for name in fields:
                if name not in row:
                    continue
                value = row[name]
                if FIELD_BY_NAME[name].kind is FieldKind.TENSOR:
                    value = np.frombuffer(base64.b64decode(value["b64"]), dtype=value["dtype"]
                                          ).reshape(value["shape"])
                record[name] = value
            yield slice_steps(record, positions)


@pytest.fixture
def toy():
    encoding = register_encoding(JsonLines())  # the one registry call a new encoding needs
    yield encoding
    unregister_encoding(encoding.name)


def test_a_registered_toy_encoding_round_trips_through_every_operation(toy, tmp_path):
    layout = small_layout(num_steps=6, keep=[0, 2, 4])
    records = make_records(layout, 5)
    url = str(tmp_path / "toy")
    with CacheWriter(url, layout=layout, fingerprint=FINGERPRINT, encoding=toy.name,
                     samples_per_shard=2) as writer:
        for record in records:
            writer.write(dict(record))
    manifest = load_manifest(url)
    assert manifest.encoding == toy.name and [s.samples for s in manifest.shards] == [2, 2, 1]
    assert all(s.path.endswith(".jsonl") for s in manifest.shards)
    assert toy.name in encoding_names() and get_encoding(toy.name) is toy

    report = verify_cache(url, deep=True)
    assert report.ok, report.problems
    assert report.checked_samples == 5

    back = list(CacheReader(url).iter_records(verify=True))
    assert all(records_equal(got, want) for got, want in zip(back, records, strict=True))
    steps = list(CacheReader(url).iter_records(fields=["states"], steps=[4]))
    np.testing.assert_array_equal(steps[3]["states"], records[3]["states"][[2]])

    # the generic machinery also moves it between encodings, tensor checksums compared
    convert(url, to="wds", output=str(tmp_path / "as_wds"), progress=False)
    convert(str(tmp_path / "as_wds"), to=toy.name, output=str(tmp_path / "back"), progress=False)
    again = list(CacheReader(str(tmp_path / "back")).iter_records(verify=True))
    assert all(records_equal(got, want) for got, want in zip(again, records, strict=True))

    # deep verify reads through the toy encoding: a flipped byte is found and named
    shard = tmp_path / "toy" / manifest.shards[0].path
    data = bytearray(shard.read_bytes())
    data[-3] = ord("A") if data[-3] != ord("A") else ord("B")
    shard.write_bytes(bytes(data))
    report = verify_cache(url, deep=True)
    assert not report.ok and manifest.shards[0].path in report.problems[0]


def test_an_unregistered_encoding_is_refused_by_name(tmp_path):
    layout = small_layout()
    with pytest.raises(UnknownEncoding, match="unknown encoding 'nope': use one of wds, zarr"):
        CacheWriter(str(tmp_path / "c"), layout=layout, fingerprint=FINGERPRINT, encoding="nope")
    with pytest.raises(ValueError, match="already registered"):
        register_encoding(type(get_encoding("wds"))())  # a second "wds" never shadows the first
    url = str(tmp_path / "w")
    with CacheWriter(url, layout=layout, fingerprint=FINGERPRINT) as writer:
        for record in make_records(layout, 2):
            writer.write(record)
    with pytest.raises(OperationRefused, match="unknown encoding 'nope'"):
        convert(url, to="nope", output=str(tmp_path / "x"), progress=False)


def test_a_cache_in_an_encoding_this_process_does_not_know_fails_readably(tmp_path):
    layout = small_layout()
    url = str(tmp_path / "toy")
    encoding = register_encoding(JsonLines())
    try:
        with CacheWriter(url, layout=layout, fingerprint=FINGERPRINT, encoding=encoding.name) as w:
            for record in make_records(layout, 2):
                w.write(record)
    finally:
        unregister_encoding(encoding.name)
    reader = CacheReader(url)
    with pytest.raises(UnknownEncoding, match="toy-jsonl"):
        next(reader.iter_records())
    report = verify_cache(url)
    assert not report.ok and "unknown encoding 'toy-jsonl'" in report.problems[0]
    assert not isinstance(UnknownEncoding("x"), IntegrityError)
