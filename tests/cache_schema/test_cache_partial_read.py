"""A reader that asks for 4 of 40 stored steps transfers about a tenth of the step bytes."""

from __future__ import annotations

import fsspec
import numpy as np
import pytest
from conftest import FINGERPRINT, make_records
from fsspec.implementations.memory import MemoryFileSystem

from cache_schema import CacheLayout, CacheReader, CacheWriter
from cache_schema.encodings.meter import ReadMeter
from cache_schema.errors import StepNotStored


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


def _forty_step_cache(url: str, codec: str = "raw") -> list[dict]:
    layout = CacheLayout(latent_shape=(16, 5, 16, 16), num_steps=40, keep_steps=tuple(range(40)),
                         text_dim=8, max_text_len=6, codec=codec)
    records = make_records(layout, 4)
    with CacheWriter(url, layout=layout, fingerprint=FINGERPRINT, encoding="zarr",
                     samples_per_shard=4) as writer:
        for r in records:
            writer.write(r)
    return records


def _selection(records: list[dict]) -> dict:
    """A few different steps per record, as training rows pick them (the last record: none)."""
    return {r["sample_id"]: {"states": [i, 20 + i, 39], "v_cond": [i], "v_uncond": [i]}
            for i, r in enumerate(records[:3])}


def _check_selected(records, got, select):
    assert [r["sample_id"] for r in got] == [r["sample_id"] for r in records]
    for want, have in zip(records, got):
        steps = select.get(want["sample_id"], {})
        for name in ("states", "v_cond", "v_uncond"):
            rows = steps.get(name, [])
            np.testing.assert_array_equal(have[name][rows], want[name][rows])
            assert not np.delete(have[name], rows, axis=0).any()  # not read: zero
        np.testing.assert_array_equal(have["x0"], want["x0"])


def test_per_record_steps_are_read_by_range_and_the_meter_counts_every_byte():
    records = _forty_step_cache("countmem://select")
    reader = CacheReader("countmem://select")
    select, fields = _selection(records), ["states", "v_cond", "v_uncond", "x0"]
    reader.removed_ids()  # the sample index is the reader's, read once, not the shard read's
    CountingMemoryFS.fetched, meter = 0, ReadMeter()
    got = list(reader.read_shard(reader.shards[0], fields, select=select, meter=meter, verify=True))
    _check_selected(records, got, select)
    assert meter.bytes == CountingMemoryFS.fetched  # the meter misses nothing the store sent
    full = ReadMeter()
    list(reader.read_shard(reader.shards[0], fields, verify=True, meter=full))
    chunks = 3 * 3 + 2 * 3  # of 4 records x 40 steps x 3 fields
    assert meter.bytes / full.bytes < chunks / (4 * 40 * 3) + 0.05


def test_a_selection_past_the_stored_steps_is_named_not_called_corruption():
    records = _forty_step_cache("memory://select-bad")
    reader = CacheReader("memory://select-bad")
    sid = records[1]["sample_id"]
    with pytest.raises(StepNotStored, match=f"sample {sid}: the selection asks states at position 40"):
        list(reader.read_shard(reader.shards[0], ["states"], select={sid: {"states": (3, 40)}}))


def test_per_record_steps_on_loopback_s3_and_a_trajectory_cache_reads_whole_records(s3_bucket):
    url = f"{s3_bucket}/select"
    records = _forty_step_cache(url)
    reader = CacheReader(url)
    select, fields = _selection(records), ["states", "v_cond", "v_uncond", "x0"]
    meter, full = ReadMeter(), ReadMeter()
    _check_selected(records, list(reader.read_shard(reader.shards[0], fields, select=select,
                                                    meter=meter, verify=True)), select)
    list(reader.read_shard(reader.shards[0], fields, meter=full))
    assert meter.bytes < 0.15 * full.bytes
    # trajectory: step i is coded against step i-1, so a record's steps are read together
    coded = f"{s3_bucket}/coded"
    _forty_step_cache(coded, codec="trajectory")
    creader = CacheReader(coded)
    assert creader.partial_fields(creader.shards[0]) == ()
    got = list(creader.read_shard(creader.shards[0], fields, select=select, verify=True))
    for want, have in zip(records, got):
        assert have["states"].tobytes() == want["states"].tobytes()
