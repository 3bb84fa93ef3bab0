"""Issue 17: S3 through a fault-injecting proxy (503 SlowDown, 500, latency, dropped
connections, truncated bodies on a seeded schedule): a cache written, read, verified and
converted through it loses no sample, duplicates none and accepts no corrupt read."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from cache_schema import CacheReader, CacheWriter, merge
from cache_schema.convert import convert
from cache_schema.verify import verify_cache

from .fault_proxy import Schedule

_spec = importlib.util.spec_from_file_location(  # the cache tests' synthetic records
    "cache_test_data", Path(__file__).parents[1] / "cache_schema" / "conftest.py")
data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(data)
FINGERPRINT, make_records, small_layout = data.FINGERPRINT, data.make_records, data.small_layout


def _same(a: dict, b: dict) -> bool:
    return all(np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k]
               for k in b if k != "checksums")


ALL = ("503", "500", "latency", "drop", "lost_reply", "truncate")
CASES = [pytest.param(0, ALL, id="seed0-all")] + [
    pytest.param(seed, kinds, id=f"seed{seed}-{'+'.join(kinds)}", marks=pytest.mark.slow)
    for seed in (1, 2) for kinds in (("503", "500", "latency", "drop"), ("lost_reply",),
                                     ("truncate",))]


@pytest.mark.parametrize("seed, kinds", CASES)
def test_write_read_verify_convert_through_faults(seed, kinds, fault_proxy, s3_bucket, capsys):
    layout = small_layout()
    # 6 samples in 2 shards: the zarr copy alone makes ~280 requests (12 samples: ~520, 10 s
    # more), so the schedule's 40 faults still land in the writes, reads, verify and convert
    records = make_records(layout, 6, seed=seed)
    expected = {r["sample_id"]: dict(r) for r in records}
    fault_proxy.set_schedule(Schedule(seed=seed, rate=0.25, kinds=kinds, max_faults=40,
                                      duration=120, max_latency=0.2))
    url = f"{s3_bucket}/c"
    with CacheWriter(url, layout=layout, fingerprint=FINGERPRINT, encoding="wds",
                     samples_per_shard=3) as writer:
        for record in records:
            writer.write(dict(record))
    got = list(CacheReader(url).iter_records(verify=True))
    ids = [r["sample_id"] for r in got]
    assert len(ids) == len(set(ids)) == 6 and set(ids) == set(expected)  # 0 lost, 0 duplicated
    assert all(_same(r, expected[r["sample_id"]]) for r in got)  # 0 corrupt reads accepted
    assert verify_cache(url, deep=True).ok
    convert(url, to="zarr", output=f"{s3_bucket}/z", progress=False)
    converted = list(CacheReader(f"{s3_bucket}/z").iter_records(verify=True))
    assert sorted(r["sample_id"] for r in converted) == sorted(expected)
    assert all(_same(r, expected[r["sample_id"]]) for r in converted)
    other = f"{s3_bucket}/o"  # merge through the faults: both caches' samples, once each
    with CacheWriter(other, layout=layout, fingerprint=FINGERPRINT, encoding="wds",
                     samples_per_shard=3) as writer:
        for record in make_records(layout, 3, seed=seed, prefix="o"):
            writer.write(record)
    merge(url, other, output=f"{s3_bucket}/m")
    merged = [r["sample_id"] for r in CacheReader(f"{s3_bucket}/m").iter_records(["seed"],
                                                                                 verify=True)]
    assert len(merged) == len(set(merged)) == 9 and set(expected) <= set(merged)
    with capsys.disabled():
        print(f"\nfault proxy seed {seed} {'+'.join(kinds)}: "
              f"{json.dumps(fault_proxy.counts, sort_keys=True)}")
    assert fault_proxy.faults > 0
    assert {fault for _, _, fault in fault_proxy.requests} >= set(kinds)  # each kind injected
