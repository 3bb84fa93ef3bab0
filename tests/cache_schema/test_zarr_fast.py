"""The fast whole-array Zarr reader returns exactly what zarr returns, or declines."""

from __future__ import annotations

import numpy as np
import zarr
from conftest import make_records, small_layout
from zarr.core.buffer.cpu import Buffer
from zarr.storage import MemoryStore

from cache_schema.encodings import zarr_shard
from cache_schema.encodings.zarr_fast import read_full_array


def test_fast_reader_equals_zarr_including_empty_chunks():
    layout = small_layout()
    records = make_records(layout, 5)
    records[2]["expert"][:] = 0  # all-fill inner chunks are not stored: the index marks them empty
    records[3]["states"][1] = 0
    objects = zarr_shard.encode_group(records, layout)
    group = zarr.open_group(store=MemoryStore({k: Buffer.from_bytes(v) for k, v in objects.items()}), mode="r")
    taken = 0
    for name in ("states", "v_cond", "v_uncond", "expert", "sigmas", "text_emb", "noise", "guidance"):
        fast = read_full_array(objects.__getitem__, name)
        assert fast is not None and fast.dtype == group[name].dtype
        assert np.array_equal(fast, group[name][:])
        taken += 1
    assert read_full_array(objects.__getitem__, "seed") is None  # not sharded: zarr reads it
    assert taken == 8


def _zarr_written(data: np.ndarray, chunks) -> dict[str, bytes]:
    """The objects zarr itself writes for one sharded array (all-fill chunks left out)."""
    objects: dict = {}
    group = zarr.open_group(store=MemoryStore(objects), mode="w", zarr_format=3)
    arr = group.create_array("x", shape=data.shape, chunks=chunks, shards=data.shape,
                             dtype=data.dtype, compressors=None, fill_value=0)
    arr[:] = data
    return {k: v.to_bytes() for k, v in objects.items()}


def test_encoder_writes_every_chunk_in_order_and_zarr_reads_it():
    layout = small_layout()
    records = make_records(layout, 4)
    records[1]["expert"][:] = 0
    for r in records:  # an array equal to its fill value everywhere is still written
        r["guidance"][:] = 0
    objects = zarr_shard.encode_group(records, layout)
    group = zarr.open_group(store=MemoryStore({k: Buffer.from_bytes(v) for k, v in objects.items()}), mode="r")
    for name in ("states", "v_cond", "expert", "guidance", "x0", "text_emb"):
        assert f"{name}/c/" + "/".join("0" * group[name].ndim) in objects
        expected = np.stack([r[name] if name != "text_emb" else
                             np.pad(r[name], ((0, layout.max_text_len - len(r[name])), (0, 0)))
                             for r in records])
        assert np.array_equal(group[name][:], expected)  # stock zarr
        assert np.array_equal(read_full_array(objects.__getitem__, name), expected)
    assert zarr_shard.encode_group(records, layout) == objects  # deterministic


def test_fast_reader_takes_zarr_written_shards_including_a_missing_all_fill_one():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((3, 4, 2, 5)).astype(np.float16)
    objects = _zarr_written(data, (1, 1, 2, 5))  # zarr stores inner chunks out of C order
    assert np.array_equal(read_full_array(objects.__getitem__, "x"), data)
    zeros = _zarr_written(np.zeros((3, 4), np.float32), (1, 4))
    assert not any(k.startswith("x/c/") for k in zeros)  # zarr wrote no data object at all
    def read_object(key: str) -> bytes:  # as a store reads: a missing object is FileNotFoundError
        if key not in zeros:
            raise FileNotFoundError(key)
        return zeros[key]
    got = read_full_array(read_object, "x")
    assert got.shape == (3, 4) and not got.any()
