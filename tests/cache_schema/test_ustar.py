"""The fast tar/npy readers accept what tarfile and numpy write and refuse what they refuse."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from cache_schema.encodings.ustar import (
    Unsupported,
    encode_tar,
    fast_members,
    iter_members,
    npy_from_bytes,
    npy_header,
)


def _tar(members: dict[str, bytes], fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        info = tarfile.TarInfo("adir")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_members_match_tarfile_including_long_names(fmt):
    long = "x" * 150 if fmt != tarfile.USTAR_FORMAT else "a" * 90 + "/" + "b" * 90
    members = {"k.meta.json": b'{"a": 1}', long: b"z" * 1000, "empty.txt": b"", "ü.txt": "ü".encode()}
    got = dict(iter_members(io.BytesIO(_tar(members, fmt))))
    assert got == members


def test_corrupt_header_is_refused():
    data = bytearray(_tar({"a.txt": b"hello"}, tarfile.USTAR_FORMAT))
    data[512 + 10] ^= 0x01  # inside the second header's name
    with pytest.raises(ValueError, match="checksum"):
        list(iter_members(io.BytesIO(bytes(data))))
    with pytest.raises(EOFError):
        list(iter_members(io.BytesIO(_tar({"a.txt": b"hello" * 200}, tarfile.USTAR_FORMAT)[:1500])))


@pytest.mark.parametrize("array", [
    np.arange(24, dtype=np.float16).reshape(2, 3, 4), np.asfortranarray(np.ones((3, 5), np.float32)),
    np.array(7, np.int64), np.zeros((0, 4), np.uint8), np.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
])
def test_npy_matches_numpy(array):
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    got = npy_from_bytes(buf.getvalue())
    assert got.dtype == array.dtype and got.shape == array.shape and np.array_equal(got, array)
    assert not got.flags.writeable  # a view on the shard bytes, never silently shared and mutated


def test_npy_with_objects_is_never_unpickled():
    buf = io.BytesIO()
    np.save(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="unpickle"):
        npy_from_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="magic"):
        npy_from_bytes(b"not an npy file")


def test_writer_gives_the_bytes_tarfile_and_numpy_write():
    arrays = [np.arange(24, dtype=np.float16).reshape(2, 3, 4), np.zeros((0, 3), np.float32),
              np.array(7, dtype=np.int64), np.ones((513,), np.uint8)]
    members = {"k.meta.json": b'{"a": 1}', "k.prompt.txt": "ü".encode(), "k.empty.txt": b""}
    expected = io.BytesIO()
    with tarfile.open(fileobj=expected, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uname = info.gname = "s2dit"
            tar.addfile(info, io.BytesIO(data))
        for name, data in members.items():
            add(name, data)
        for i, array in enumerate(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, array, allow_pickle=False)
            add(f"k.a{i}.npy", buf.getvalue())
    ours = [(name, [data]) for name, data in members.items()]
    ours += [(f"k.a{i}.npy", [npy_header(a), a.reshape(-1).view(np.uint8)])
             for i, a in enumerate(arrays)]
    assert encode_tar(ours) == expected.getvalue()
    with pytest.raises(ValueError, match="longer than 100"):
        encode_tar([("n" * 101, [b""])])


def _base256_size(data: bytes, member: int) -> bytes:
    """``data`` with the size field of its ``member``-th header rewritten in GNU base-256 (as GNU
    tar writes sizes over 8 GiB) and the header checksum recomputed: a valid tar."""
    out, pos = bytearray(data), 0
    for _ in range(member):
        size = int(out[pos + 124 : pos + 136].rstrip(b"\0 "), 8)
        pos += 512 + size + (-size % 512)
    size = int(out[pos + 124 : pos + 136].rstrip(b"\0 "), 8)
    out[pos + 124 : pos + 136] = b"\x80" + size.to_bytes(11, "big")
    out[pos + 148 : pos + 156] = b" " * 8
    out[pos + 148 : pos + 156] = b"%06o\0 " % sum(out[pos : pos + 512])
    return bytes(out)


def _stock(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]


def test_what_the_fast_reader_does_not_implement_is_read_by_stock_tarfile():
    members = {f"k{i}.field.npy": bytes([i]) * (300 + i) for i in range(4)}
    # 1. a base-256 size on the third member (of five: the directory comes first)
    data = _base256_size(_tar(members, tarfile.GNU_FORMAT), member=3)
    with pytest.raises(Unsupported, match="base-256"):
        list(fast_members(io.BytesIO(data)))
    assert _stock(data) == list(members.items())  # tarfile reads it: a valid archive
    assert list(iter_members(io.BytesIO(data))) == list(members.items())  # each member once
    # 2. pax "size" records (written by other tools for large members)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.pax_headers = len(payload), {"size": str(len(payload))}
            tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(Unsupported, match="pax record 'size'"):
        list(fast_members(io.BytesIO(buf.getvalue())))
    assert list(iter_members(io.BytesIO(buf.getvalue()))) == list(members.items())


def test_fallback_needs_a_seekable_stream_and_never_hides_corruption():
    data = _base256_size(_tar({"a.txt": b"x" * 10, "b.txt": b"y" * 10}, tarfile.GNU_FORMAT), 2)

    class Pipe(io.RawIOBase):  # a forward-only stream, as a pipe
        def __init__(self, payload):
            self._inner = io.BytesIO(payload)

        def read(self, size=-1):
            return self._inner.read(size)

        def readable(self):
            return True

    with pytest.raises(Unsupported, match="seekable"):
        list(iter_members(Pipe(data)))
    bad = bytearray(data)
    bad[512 + 5] ^= 0x01  # the first file's header: a checksum failure is corruption
    with pytest.raises(ValueError, match="checksum") as err:
        list(iter_members(io.BytesIO(bytes(bad))))
    assert not isinstance(err.value, Unsupported)


def test_a_shard_repacked_by_another_tool_reads_the_same(tmp_path):
    """A cache shard re-packed with pax size records (as tools do for large members) gives the
    same records, checksums verified, through the reader's fallback."""
    from conftest import FINGERPRINT, make_records, small_layout

    from cache_schema import CacheReader, CacheWriter, load_manifest
    from cache_schema.reader import records_equal

    layout = small_layout()
    records = make_records(layout, 3)
    url = str(tmp_path / "c")
    with CacheWriter(url, layout=layout, fingerprint=FINGERPRINT, samples_per_shard=3) as writer:
        for record in records:
            writer.write(dict(record))
    path = tmp_path / "c" / load_manifest(url).shards[0].path
    original = path.read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, payload in _stock(original):
            info = tarfile.TarInfo(name)
            info.size, info.pax_headers = len(payload), {"size": str(len(payload))}
            tar.addfile(info, io.BytesIO(payload))
    path.write_bytes(buf.getvalue())
    back = list(CacheReader(url).iter_records(verify=True))
    want = [{k: v for k, v in r.items() if k != "checksums"} for r in records]
    assert len(back) == 3 and all(map(records_equal, back, want))
