"""The fast tar/npy readers accept what tarfile and numpy write and refuse what they refuse."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from cache_schema.encodings.ustar import encode_tar, iter_members, npy_from_bytes, npy_header


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
