"""Decoded sizes of compressed chunks are checked from their frame headers before any buffer is
allocated (issue 28): a forged chunk of a few bytes that claims (blosc ``nbytes``, zstd
``Frame_Content_Size``) or decodes to (a zstd frame without its size) hundreds of megabytes is
refused naming the header field, the field and the shard, within a small memory bound."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import google_crc32c
import numpy as np
import pytest
from conftest import FINGERPRINT, make_records, small_layout
from test_fuzz_parsers import _alarm, traced_peak

from cache_schema import CacheReader, CacheWriter, IntegrityError
from cache_schema.bounds import check_frame_size, frame_decoded_size

LAYOUT = dataclasses.replace(small_layout(), codec="zstd")
CLAIM = 512 * 2**20  # what the forged frames claim or decode to
MEMORY_BOUND = 64 * 2**20


def _blosc_claiming(nbytes: int) -> bytes:
    header = bytes([2, 1, 0x91, 2]) + struct.pack("<III", nbytes, nbytes, 32)
    return header + bytes(16)


def _zstd_rle(total: int, content_size: int | None = None) -> bytes:
    """A zstd frame of RLE blocks (4 bytes per 128 KiB decoded), with or without its size."""
    out = struct.pack("<I", 0xFD2FB528) + bytes([0x00 if content_size is None else 0xC0, 0x58])
    if content_size is not None:
        out += struct.pack("<Q", content_size)
    blocks = total // (1 << 17)
    for i in range(blocks):
        out += ((i == blocks - 1) | 1 << 1 | (1 << 17) << 3).to_bytes(3, "little") + b"\x07"
    return out


def _forge_states_chunk(root: Path, shard_path: str, frame: bytes, inner: str) -> None:
    """Replace the first inner chunk of the shard's ``states`` with ``frame`` (index and its
    crc32c rewritten, inner codec set to ``inner``)."""
    meta_path = root / shard_path / "states" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    conf = meta["codecs"][0]["configuration"]
    conf["codecs"] = [conf["codecs"][0], {"name": inner, "configuration": {}}]
    meta_path.write_text(json.dumps(meta))
    shard = next(p for p in (root / shard_path / "states" / "c").rglob("*") if p.is_file())
    data = shard.read_bytes()
    count = int(np.prod([s // c for s, c in zip(meta["shape"], conf["chunk_shape"])]))
    index = np.frombuffer(data[len(data) - 16 * count - 4 : -4], dtype="<u8").reshape(count, 2)
    chunks = [data[int(o) : int(o) + int(n)] for o, n in index]
    chunks[0] = frame
    offsets = np.cumsum([0] + [len(c) for c in chunks[:-1]], dtype=np.uint64)
    new = np.stack([offsets, np.array([len(c) for c in chunks], np.uint64)], axis=1).astype("<u8")
    body = new.tobytes()
    shard.write_bytes(b"".join(chunks) + body + struct.pack("<I", google_crc32c.value(body)))


def _cache(tmp_path: Path) -> tuple[str, str]:
    url = str(tmp_path / "c")
    with CacheWriter(url, layout=LAYOUT, fingerprint=FINGERPRINT, encoding="zarr",
                     samples_per_shard=2) as writer:
        for record in make_records(LAYOUT, 2):
            writer.write(record)
    return url, CacheReader(url).shards[0].path


def test_frame_headers_give_the_claimed_size():
    assert frame_decoded_size("blosc", _blosc_claiming(123), "x") == ("nbytes", 123)
    assert frame_decoded_size("zstd", _zstd_rle(1 << 17, 99), "x") == ("Frame_Content_Size", 99)
    assert frame_decoded_size("zstd", _zstd_rle(1 << 17), "x") == ("Frame_Content_Size", None)
    with pytest.raises(ValueError, match="cbytes"):
        check_frame_size("blosc", _blosc_claiming(8)[:-1], 8, "x")
    with pytest.raises(ValueError, match="not start with a zstd frame"):
        check_frame_size("zstd", b"\0" * 16, 8, "x")


@pytest.mark.parametrize(("frame", "inner", "match"), [
    (_blosc_claiming(CLAIM), "blosc", r"blosc frame header's nbytes field claims 536870912"),
    (_zstd_rle(1 << 17, CLAIM), "zstd", r"zstd frame header's Frame_Content_Size field claims"),
    (_zstd_rle(CLAIM), "zstd", r"Destination buffer is too small"),  # no size in the header
], ids=["blosc-nbytes", "zstd-content-size", "zstd-no-size"])
def test_a_small_chunk_claiming_gigabytes_is_refused_before_allocating(tmp_path, frame, inner,
                                                                       match):
    url, shard = _cache(tmp_path)
    _forge_states_chunk(tmp_path / "c", shard, frame, inner)
    assert len(frame) < 32 * 2**10
    with traced_peak() as peak, _alarm(10.0), pytest.raises(IntegrityError, match=match) as info:
        list(CacheReader(url).iter_records(fields=("sample_id", "states")))
    assert peak() < MEMORY_BOUND
    assert shard in str(info.value) and "field states" in str(info.value)


def test_a_raw_cache_array_declaring_a_compressor_is_refused(tmp_path):
    """Stock zarr (the fallback reader of raw caches) decodes unbounded: raw caches compress
    nothing, so an array that says otherwise is refused from its metadata."""
    url = str(tmp_path / "c")
    layout = small_layout()
    with CacheWriter(url, layout=layout, fingerprint=FINGERPRINT, encoding="zarr",
                     samples_per_shard=2) as writer:
        for record in make_records(layout, 2):
            writer.write(record)
    shard = CacheReader(url).shards[0].path
    meta_path = tmp_path / "c" / shard / "states" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    conf = meta["codecs"][0]["configuration"]
    conf["codecs"] = [*conf["codecs"], {"name": "gzip", "configuration": {"level": 1}}]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(IntegrityError, match=r"zarr array 'states' uses codec 'gzip'"):
        list(CacheReader(url).iter_records(fields=("sample_id", "states")))
