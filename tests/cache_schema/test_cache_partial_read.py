"""A reader that asks for 4 of 40 stored steps transfers about a tenth of the step bytes."""

from __future__ import annotations

import fsspec
import numpy as np
from conftest import FINGERPRINT, make_records
from fsspec.implementations.memory import MemoryFileSystem

from cache_schema import CacheLayout, CacheReader, CacheWriter


class CountingMemoryFS(MemoryFileSystem):
    """memory:// that counts the bytes it hands out (ranged reads included)."""

    protocol = ("countmem",)
    root_marker = "/"
    fetched = 0

    def cat_file(self, path, start=None, end=None, **kwargs):
        data = super().cat_file(path, start=start, end=end, **kwargs)
        CountingMemoryFS.fetched += len(data)
        return data


fsspec.register_implementation("countmem", CountingMemoryFS, clobber=True)


def test_four_of_forty_steps_transfer_a_tenth():
    # Latents of a realistic size per state (16x5x16x16 fp16 = 40 KiB), so metadata is negligible.
    layout = CacheLayout(latent_shape=(16, 5, 16, 16), num_steps=40, keep_steps=tuple(range(40)),
                         text_dim=8, max_text_len=6)
    records = make_records(layout, 4)
    url = "countmem://partial"
    with CacheWriter(url, layout=layout, fingerprint=FINGERPRINT, encoding="zarr",
                     samples_per_shard=4) as writer:
        for r in records:
            writer.write(r)
    reader = CacheReader(url)
    fields = ["states", "v_cond", "v_uncond"]

    CountingMemoryFS.fetched = 0
    full = list(reader.iter_records(fields=fields))
    all_bytes = CountingMemoryFS.fetched
    CountingMemoryFS.fetched = 0
    part = list(reader.iter_records(fields=fields, steps=[0, 10, 20, 30]))
    some_bytes = CountingMemoryFS.fetched

    np.testing.assert_array_equal(part[2]["v_cond"], full[2]["v_cond"][[0, 10, 20, 30]])
    ratio = some_bytes / all_bytes
    assert 0.08 < ratio < 0.15, ratio
