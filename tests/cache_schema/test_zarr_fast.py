"""The fast whole-array Zarr reader returns exactly what zarr returns, or declines."""

from __future__ import annotations

import numpy as np
import zarr
from zarr.core.buffer.cpu import Buffer
from zarr.storage import MemoryStore

from cache_schema.encodings import zarr_shard
from cache_schema.encodings.zarr_fast import read_full_array

from conftest import make_records, small_layout


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
