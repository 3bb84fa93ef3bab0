"""Round trips of both encodings on a local folder and on the loopback S3 server."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr
from conftest import FINGERPRINT, make_records, small_layout

from cache_schema import CacheReader, CacheWriter, RecordError, load_manifest
from cache_schema.reader import records_equal


def _write(url, layout, records, encoding, per_shard=3):
    with CacheWriter(url, layout=layout, fingerprint=FINGERPRINT, encoding=encoding,
                     samples_per_shard=per_shard, config={"note": "test"}) as writer:
        for record in records:
            writer.write(dict(record))
    return writer.manifest


@pytest.mark.parametrize("encoding", ["wds", "zarr"])
@pytest.mark.parametrize("where", ["local", "s3", "memory"])
def test_round_trip_equals_written(encoding, where, tmp_path, request):
    if where == "local":
        url = str(tmp_path / "cache")
    elif where == "s3":
        url = request.getfixturevalue("s3_bucket") + "/cache"
    else:
        url = f"memory://rt-{encoding}-{tmp_path.name}"
    layout = small_layout()
    records = make_records(layout, 7)
    manifest = _write(url, layout, records, encoding)
    assert manifest.generation == 1 and manifest.num_samples == 7 and len(manifest.shards) == 3
    back = list(CacheReader(url).iter_records(verify=True))
    assert len(back) == 7
    for got, want in zip(back, records):
        want = {k: v for k, v in want.items() if k != "checksums"}
        assert records_equal(got, want), got["sample_id"]


@pytest.mark.parametrize("encoding", ["wds", "zarr"])
def test_selected_fields_and_steps(encoding, tmp_path):
    layout = small_layout(num_steps=10, keep=[0, 2, 4, 6, 8])
    records = make_records(layout, 4)
    _write(str(tmp_path), layout, records, encoding)
    reader = CacheReader(str(tmp_path))
    got = list(reader.iter_records(fields=["states", "sigmas"], steps=[2, 8]))
    assert set(got[0]) == {"sample_id", "states", "sigmas"}
    for rec, want in zip(got, records):
        np.testing.assert_array_equal(rec["states"], want["states"][[1, 4]])
        np.testing.assert_array_equal(rec["sigmas"], want["sigmas"][[1, 4]])
    with pytest.raises(KeyError, match="step 3 is not stored"):
        next(reader.iter_records(fields=["states"], steps=[3]))


def test_stock_libraries_read_the_cache(tmp_path):
    layout = small_layout()
    records = make_records(layout, 4)
    wds_url, zarr_url = tmp_path / "w", tmp_path / "z"
    _write(str(wds_url), layout, records, "wds", per_shard=4)
    _write(str(zarr_url), layout, records, "zarr", per_shard=4)
    import webdataset

    manifest = load_manifest(str(wds_url))
    tar_path = str(wds_url / manifest.shards[0].path)
    samples = list(webdataset.WebDataset(tar_path, shardshuffle=False).decode())
    assert [s["__key__"] for s in samples] == [r["sample_id"] for r in records]
    np.testing.assert_array_equal(samples[0]["states.npy"], records[0]["states"])
    assert samples[1]["prompt.txt"] == records[1]["prompt"]
    with tarfile.open(tar_path) as tar:  # plain tar too
        assert f"{records[0]['sample_id']}.x0.npy" in tar.getnames()
    zmanifest = load_manifest(str(zarr_url))
    group = zarr.open(str(zarr_url / zmanifest.shards[0].path), mode="r")
    np.testing.assert_array_equal(group["v_cond"][2], records[2]["v_cond"])
    assert list(group["prompt"][:]) == [r["prompt"] for r in records]
    index = pq.read_table(str(zarr_url / zmanifest.index_path))
    assert index.column("sample_id").to_pylist() == [r["sample_id"] for r in records]
    body = json.loads((zarr_url / "manifests" / "000001.json").read_text())
    assert body["extra"]["config"] == {"note": "test"}
    assert "AWS" not in json.dumps(body) and "endpoint" not in json.dumps(body)


@pytest.mark.parametrize("mutate, rule", [
    (lambda r: r.update(states=r["states"].astype(np.float32)), "dtype"),
    (lambda r: r.update(x0=r["x0"][:, :1]), "shape"),
    (lambda r: r["v_cond"].__setitem__((0, 0, 0, 0, 0), np.nan), "NaN"),
    (lambda r: r["states"].__setitem__((-1, -1, -1, -1, -1), -np.inf), "Inf"),
    (lambda r: r.update(sigmas=np.where(np.arange(len(r["sigmas"])) == 1, np.inf,
                                        r["sigmas"]).astype(np.float32)), "Inf"),
    (lambda r: r.update(prompt=b"\xff\xfe bad"), "UTF-8"),
    (lambda r: r.pop("x0"), "missing"),
])
def test_bad_input_refused_before_anything_is_written(mutate, rule, tmp_path):
    layout = small_layout()
    good, bad = make_records(layout, 2)
    mutate(bad)
    writer = CacheWriter(str(tmp_path), layout=layout, fingerprint=FINGERPRINT, samples_per_shard=1)
    writer.write(good)
    with pytest.raises(RecordError, match=rule):
        writer.write(bad)
    writer.abort()
    assert load_manifest(str(tmp_path)) is None
