"""append, filter, dedup, merge, convert, two-cache diff: new generations only, old ones intact."""

from __future__ import annotations

import pytest

from cache_schema import (CacheReader, CacheError, FingerprintMismatch, ManifestError,
                          commit_generation, list_generations, load_manifest, open_store,
                          split_ref, write_shard)
from cache_schema.convert import convert
from cache_schema.encodings import zarr_shard
from cache_schema.errors import IntegrityError, OperationRefused
from cache_schema.manifest import manifest_rel
from cache_schema.operations import append, dedup, filter_samples, merge
from cache_schema.reader import records_equal
from cache_schema.verify import verify_cache
from cache_schema.versioning import diff, diff_caches, gc
from pipeline.cli import main as cli

from conftest import FINGERPRINT, make_records, small_layout


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    return str(tmp_path) if request.param == "local" else request.getfixturevalue("s3_bucket")


def make_cache(url: str, prefix: str, *, shards: int = 2, per_shard: int = 3, encoding: str = "wds",
               fingerprint=FINGERPRINT, records=None) -> str:
    layout = small_layout()
    infos = []
    for i in range(shards):
        recs = records[i * per_shard:(i + 1) * per_shard] if records else \
            make_records(layout, per_shard, seed=i, prefix=f"{prefix}{i}")
        infos.append(write_shard(url, recs, layout=layout, encoding=encoding, shard_name=f"unit{i:06d}"))
    commit_generation(url, shards=infos, layout=layout, fingerprint=fingerprint)
    return url


def snapshot(url: str) -> tuple[list[dict], bytes]:
    """Every record of a pinned generation, and its manifest's exact bytes."""
    base, ref = split_ref(url)
    return list(CacheReader(url).iter_records()), open_store(base).read_bytes(manifest_rel(int(ref)))


def same(a: tuple[list[dict], bytes], b: tuple[list[dict], bytes]) -> bool:
    return a[1] == b[1] and len(a[0]) == len(b[0]) and all(map(records_equal, a[0], b[0]))


def ids(url: str) -> list[str]:
    return [r["sample_id"] for r in CacheReader(url).iter_records(fields=["seed"])]


def shard_objects(url: str) -> dict[str, int]:
    return open_store(url).walk_files("shards")


def test_append_by_reference_copies_nothing_and_keeps_old_generations(root):
    a, b = make_cache(f"{root}/a", "a"), make_cache(f"{root}/b", "b")
    before, objects = snapshot(f"{a}@1"), shard_objects(a)
    result = append(a, b)
    assert result.manifest.generation == 2 and result.copied_shards == 0
    assert result.referenced_shards == 2 and shard_objects(a) == objects  # no bytes copied
    assert ids(a) == ids(f"{a}@1") + ids(b)
    assert same(snapshot(f"{a}@1"), before)  # the pinned generation reads byte for byte
    assert verify_cache(a, deep=True).ok
    assert load_manifest(a).shards[2].root is not None
    # refusals change nothing
    with pytest.raises(CacheError, match="twice"):
        append(a, b)
    with pytest.raises(OperationRefused, match="same cache"):
        append(a, f"{a}@1")
    other = make_cache(f"{root}/other", "o", fingerprint={**FINGERPRINT, "shift": 5.0})
    with pytest.raises(FingerprintMismatch, match=r"shift: 3.0 -> 5.0|shift"):
        append(a, other)
    with pytest.raises(ManifestError, match="unknown tag"):
        append(a, f"{b}@nope")
    with pytest.raises(ManifestError, match="out of range"):
        append(a, f"{b}@7")
    assert list_generations(open_store(a)) == [1, 2] and shard_objects(a) == objects
    # gc on either cache never takes a referenced object
    assert gc(a, grace_seconds=0).deleted == [] and gc(b, grace_seconds=0).deleted == []
    assert verify_cache(a, deep=True).ok and verify_cache(f"{a}@1", deep=True).ok


@pytest.mark.parametrize("direction", ["local->s3", "s3->local"])
def test_append_across_stores_copies_and_verifies(direction, tmp_path, s3_bucket):
    local, remote = str(tmp_path / "c"), f"{s3_bucket}/c"
    dst, src = (remote, local) if direction == "local->s3" else (local, remote)
    make_cache(dst, "d")
    make_cache(src, "s")
    before = snapshot(f"{dst}@1")
    result = append(dst, src)
    assert result.copied_shards == 2 and result.referenced_shards == 0
    assert all(s.root is None for s in result.manifest.shards)
    assert len(shard_objects(dst)) == 4 and verify_cache(dst, deep=True).ok
    assert ids(dst) == ids(f"{dst}@1") + ids(src)
    assert same(snapshot(f"{dst}@1"), before)


def test_filter_by_ids_and_where_then_dedup(root, tmp_path, capsys):
    layout = small_layout()
    records = make_records(layout, 6, seed=3, prefix="f")
    records[4]["prompt"] = "  F PROMPT 0 –   ÜNÏCODE "  # the same prompt as record 0, spelled differently
    records[4]["seed"] = records[0]["seed"]
    url = make_cache(f"{root}/f", "f", records=records)
    v1 = snapshot(f"{url}@1")
    all_ids = ids(url)
    id_file = tmp_path / "drop.txt"
    id_file.write_text(f"# drop two\n{all_ids[1]}\n{all_ids[2]}\n\nnot-an-id\n")
    assert cli(["cache", "filter", url, "--exclude-ids", str(id_file)]) == 0
    assert ids(url) == [i for i in all_ids if i not in all_ids[1:3]]
    assert load_manifest(url).num_samples == 4 and load_manifest(url).shards == load_manifest(f"{url}@1").shards
    result = filter_samples(url, where="seed != 1005")
    assert result.removed == 1 and load_manifest(url).generation == 3
    assert dedup(url).removed == 1 and ids(url) == [all_ids[0], all_ids[3]]
    assert dedup(url).manifest is None  # nothing left to dedup: nothing committed
    change = diff(url, 1, 4)
    assert change["removed"] == 4 and change["added"] == 0
    assert same(snapshot(f"{url}@1"), v1) and ids(f"{url}@2") == ids(url)[:1] + all_ids[3:]
    for bad, message in (("seed <", "not a valid expression"), ("colour == 'red'", "unknown column"),
                         ("__import__('os').system('true')", "not a condition"),
                         ("seed > -1", "keeps every live sample"), ("seed < 0", "remove all")):
        with pytest.raises(OperationRefused, match=message):
            filter_samples(url, where=bad)
    with pytest.raises(OperationRefused, match="none of the"):
        filter_samples(url, exclude_ids=["nope"])
    assert cli(["cache", "filter", url, "--where", "colour == 1"]) == 2
    assert list_generations(open_store(url)) == [1, 2, 3, 4]
    assert verify_cache(url, deep=True).ok
    capsys.readouterr()
    assert cli(["cache", "log", url]) == 0
    log = capsys.readouterr().out
    assert "generation 3: filter from 2" in log and "where=seed != 1005" in log and "filter=dedup" in log


def test_merge_and_two_cache_diff(root):
    a, b = make_cache(f"{root}/a", "a"), make_cache(f"{root}/b", "b", shards=1)
    filter_samples(a, exclude_ids=ids(a)[:1])
    result = merge(a, f"{b}@1", output=f"{root}/c")
    c = f"{root}/c"
    assert result.manifest.generation == 1 and result.manifest.operation == "merge"
    assert ids(c) == ids(a) + ids(b) and load_manifest(c).num_samples == 5 + 3
    assert result.copied_shards == 0 and not shard_objects(c)  # same store: all referenced
    assert verify_cache(c, deep=True).ok
    with pytest.raises(OperationRefused, match="already holds a cache"):
        merge(a, b, output=c)
    with pytest.raises(CacheError, match="twice"):
        merge(a, c, output=f"{root}/d")
    assert not list_generations(open_store(f"{root}/d"))
    change = diff_caches(f"{a}@1", c)
    assert change["added"] == 3 and change["removed"] == 1 and not change["fingerprint_changes"]
    assert cli(["cache", "diff", f"{a}@1", c]) == 0
    assert cli(["cache", "merge", a, b, "--output", c]) == 2


@pytest.mark.parametrize("source", ["wds", "zarr"])
def test_convert_roundtrip_checks_every_tensor(root, source, monkeypatch):
    url = make_cache(f"{root}/src", "v", encoding=source)
    filter_samples(url, exclude_ids=ids(url)[:1])
    target = "zarr" if source == "wds" else "wds"
    assert cli(["cache", "convert", url, "--to", target, "--output", f"{root}/conv"]) == 0
    converted = load_manifest(f"{root}/conv")
    assert converted.encoding == target and converted.operation == "convert"
    assert converted.fingerprint == FINGERPRINT and converted.num_samples == 5
    src_records = list(CacheReader(url).iter_records())
    assert all(map(records_equal, src_records, CacheReader(f"{root}/conv").iter_records()))
    back = convert(f"{root}/conv", to=source, output=f"{root}/back", progress=False)
    assert back.added == 5
    assert all(map(records_equal, src_records, CacheReader(f"{root}/back").iter_records()))

    from cache_schema.encodings import wds

    module, name = (zarr_shard, "encode_group") if target == "zarr" else (wds, "encode_shard")
    real_encode = getattr(module, name)

    def corrupting_encode(records, *args):  # flips one value after the checksums were taken
        records[1]["states"] = records[1]["states"].copy()
        records[1]["states"].flat[0] += 1
        return real_encode(records, *args)

    monkeypatch.setattr(module, name, corrupting_encode)
    with pytest.raises(IntegrityError, match="differs from the source|fails its checksum"):
        convert(url, to=target, output=f"{root}/bad", progress=False)
    assert not list_generations(open_store(f"{root}/bad"))  # nothing committed
