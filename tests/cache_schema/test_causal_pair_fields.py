"""The optional causal ODE pair fields (issue 26: ``causal_states``, ``causal_x0``): declared in
the schema, written together or not at all, round-tripped by both encodings (and a value codec,
a conversion and partial step reads), readable by the stock libraries; caches without them are
what they were."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
import zarr
from conftest import FINGERPRINT, make_records, small_layout

from cache_schema import (
    CAUSAL_CHUNK_KEY,
    CAUSAL_PAIR_FIELDS,
    FIELD_BY_NAME,
    REQUIRED_FIELDS,
    CacheReader,
    CacheWriter,
    RecordError,
    causal_chunk_frames,
    load_manifest,
    validate_record,
)
from cache_schema.convert import convert
from cache_schema.reader import records_equal


def with_pairs(layout, records, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for r in records:
        out.append({**r, "causal_states": rng.standard_normal(r["states"].shape).astype(np.float16),
                    "causal_x0": rng.standard_normal(r["x0"].shape).astype(np.float16)})
    return out


def _write(url, layout, records, encoding, **kw):
    with CacheWriter(url, layout=layout, fingerprint={**FINGERPRINT, CAUSAL_CHUNK_KEY: 1},
                     encoding=encoding, samples_per_shard=3, **kw) as writer:
        for record in records:
            writer.write(dict(record))
    return writer.manifest


def test_the_pair_is_declared_optional_and_comes_together():
    assert CAUSAL_PAIR_FIELDS == ("causal_states", "causal_x0")
    assert FIELD_BY_NAME["causal_states"].axes == FIELD_BY_NAME["states"].axes
    assert FIELD_BY_NAME["causal_x0"].axes == FIELD_BY_NAME["x0"].axes
    assert not set(CAUSAL_PAIR_FIELDS) & set(REQUIRED_FIELDS)
    assert causal_chunk_frames({"teacher": "x"}) == 0 and causal_chunk_frames({CAUSAL_CHUNK_KEY: 3}) == 3
    layout = small_layout()
    plain, = make_records(layout, 1)
    validate_record(plain, layout)  # old records stay valid
    full, = with_pairs(layout, [plain])
    validate_record(full, layout)
    half = dict(full)
    del half["causal_x0"]
    with pytest.raises(RecordError, match="causal_x0.*is missing: the causal fields come together"):
        validate_record(half, layout)
    bad = {**full, "causal_states": full["causal_states"][:, :, :1]}
    with pytest.raises(RecordError, match="causal_states.*shape"):
        validate_record(bad, layout)
    # a size estimate counts them only when asked (a job writes them only when asked)
    extra = layout.raw_bytes_per_sample(6, ("causal",)) - layout.raw_bytes_per_sample(6)
    assert extra == full["causal_states"].nbytes + full["causal_x0"].nbytes


@pytest.mark.parametrize("encoding,codec", [("wds", "raw"), ("zarr", "raw"), ("zarr", "trajectory")])
def test_round_trip_of_the_pair(encoding, codec, tmp_path):
    import dataclasses

    layout = dataclasses.replace(small_layout(num_steps=10, keep=[0, 2, 4, 6, 8]), codec=codec)
    records = with_pairs(layout, make_records(layout, 5))
    manifest = _write(str(tmp_path / "c"), layout, records, encoding)
    assert causal_chunk_frames(manifest.fingerprint) == 1
    reader = CacheReader(str(tmp_path / "c"))
    back = list(reader.iter_records(verify=True))
    for got, want in zip(back, records, strict=True):
        assert records_equal(got, want), got["sample_id"]
    # only the pair and sigmas, at two kept steps: the step axis is cut like the states'
    got = list(reader.iter_records(fields=["causal_states", "causal_x0", "sigmas"], steps=[2, 8]))
    assert set(got[0]) == {"sample_id", *CAUSAL_PAIR_FIELDS, "sigmas"}
    for rec, want in zip(got, records):
        np.testing.assert_array_equal(rec["causal_states"], want["causal_states"][[1, 4]])
        np.testing.assert_array_equal(rec["causal_x0"], want["causal_x0"])


def test_a_conversion_keeps_the_pair_and_stock_readers_read_it(tmp_path):
    layout = small_layout()
    records = with_pairs(layout, make_records(layout, 3))
    wds_url, zarr_url = tmp_path / "w", tmp_path / "z"
    _write(str(wds_url), layout, records, "wds")
    convert(str(wds_url), to="zarr", output=str(zarr_url))
    for url in (wds_url, zarr_url):
        back = list(CacheReader(str(url)).iter_records(verify=True))
        assert all(records_equal(g, w) for g, w in zip(back, records, strict=True))
    import webdataset

    tar_path = str(wds_url / load_manifest(str(wds_url)).shards[0].path)
    samples = list(webdataset.WebDataset(tar_path, shardshuffle=False).decode())
    np.testing.assert_array_equal(samples[1]["causal_states.npy"], records[1]["causal_states"])
    np.testing.assert_array_equal(samples[2]["causal_x0.npy"], records[2]["causal_x0"])
    with tarfile.open(tar_path) as tar:
        assert f"{records[0]['sample_id']}.causal_x0.npy" in tar.getnames()
    group = zarr.open(str(zarr_url / load_manifest(str(zarr_url)).shards[0].path), mode="r")
    np.testing.assert_array_equal(group["causal_states"][2], records[2]["causal_states"])
    np.testing.assert_array_equal(group["causal_x0"][0], records[0]["causal_x0"])


@pytest.mark.parametrize("encoding", ["wds", "zarr"])
def test_a_cache_without_the_pair_holds_no_trace_of_it(encoding, tmp_path):
    layout = small_layout()
    records = make_records(layout, 3)
    with CacheWriter(str(tmp_path), layout=layout, fingerprint=FINGERPRINT, encoding=encoding,
                     samples_per_shard=3) as writer:
        for record in records:
            writer.write(dict(record))
    assert causal_chunk_frames(writer.manifest.fingerprint) == 0
    reader = CacheReader(str(tmp_path))
    got = list(reader.iter_records(fields=["x0", *CAUSAL_PAIR_FIELDS]))  # asked, absent: skipped
    assert set(got[0]) == {"sample_id", "x0"}
    names = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")]
    assert not any("causal" in n for n in names)
