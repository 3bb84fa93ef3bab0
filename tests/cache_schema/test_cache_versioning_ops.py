"""append, filter, dedup, merge, convert, two-cache diff: new generations only, old ones intact.

Every test runs on a local folder and on a loopback S3 server. "Changes nothing" is checked on
the complete object listing (path and size of every object) of every cache involved.
"""

from __future__ import annotations

import contextlib
import re
import shutil

import pytest
from conftest import FINGERPRINT, make_records, small_layout

from cache_schema import (
    CacheError,
    CacheReader,
    FingerprintMismatch,
    ManifestError,
    commit_generation,
    list_generations,
    load_manifest,
    open_store,
    split_ref,
    write_shard,
)
from cache_schema import convert as convert_module
from cache_schema.convert import convert
from cache_schema.encodings import wds, zarr_shard
from cache_schema.errors import IntegrityError, OperationRefused
from cache_schema.index import STATUS_REMOVED
from cache_schema.manifest import manifest_rel
from cache_schema.operations import append, dedup, filter_samples, merge
from cache_schema.reader import records_equal
from cache_schema.store import relative_root, resolve_root
from cache_schema.verify import verify_cache
from cache_schema.versioning import diff, diff_caches, gc
from pipeline.cli import main as cli

OTHER_FINGERPRINT = {**FINGERPRINT, "shift": 5.0}


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


def orphan(url: str, encoding: str = "wds") -> str:
    """A shard written but never committed (a killed writer's leftover): gc's only target."""
    layout = small_layout()
    return write_shard(url, make_records(layout, 1, seed=99, prefix=f"orphan {url}"), layout=layout,
                       encoding=encoding, shard_name="orphan").path


def snapshot(url: str) -> tuple[list[dict], bytes]:
    """Every record of a pinned generation, and its manifest's exact bytes."""
    base, ref = split_ref(url)
    return list(CacheReader(url).iter_records()), open_store(base).read_bytes(manifest_rel(int(ref)))


def same(a: tuple[list[dict], bytes], b: tuple[list[dict], bytes]) -> bool:
    return a[1] == b[1] and len(a[0]) == len(b[0]) and all(map(records_equal, a[0], b[0]))


def snapshots(url: str) -> dict[int, tuple[list[dict], bytes]]:
    return {g: snapshot(f"{url}@{g}") for g in list_generations(open_store(url))}


def all_same(before: dict, url: str) -> bool:
    """Every generation in ``before`` still reads byte for byte as it did."""
    return all(same(snap, snapshot(f"{url}@{g}")) for g, snap in before.items())


def ids(url: str) -> list[str]:
    return [r["sample_id"] for r in CacheReader(url).iter_records(fields=["seed"])]


def listing(url: str) -> dict[str, int]:
    return open_store(url).walk_files("")


def shard_objects(url: str) -> dict[str, int]:
    return open_store(url).walk_files("shards")


@contextlib.contextmanager
def changes_nothing(*urls: str):
    before = [listing(u) for u in urls]
    yield
    assert [listing(u) for u in urls] == before


def test_append_by_reference_copies_nothing_and_keeps_old_generations(root):
    a, b = make_cache(f"{root}/a", "a"), make_cache(f"{root}/b", "b")
    before, objects, b_listing = snapshot(f"{a}@1"), shard_objects(a), listing(b)
    assert b'"root"' not in before[1]  # a manifest without references: the same bytes as ever
    pinned = CacheReader(f"{a}@1")  # a reader opened before the append
    result = append(a, b)
    assert result.manifest.generation == 2 and result.manifest.operation == "append"
    assert result.copied_shards == 0 and result.referenced_shards == 2
    assert shard_objects(a) == objects and listing(b) == b_listing  # no bytes copied or touched
    assert [s.root for s in load_manifest(a).shards] == [None, None] + ["../b"] * 2  # relative
    assert ids(a) == ids(f"{a}@1") + ids(b) and load_manifest(a).num_samples == 12
    assert [r["sample_id"] for r in pinned.iter_records(fields=["seed"])] == ids(f"{a}@1")
    assert same(snapshot(f"{a}@1"), before)  # the pinned generation reads byte for byte
    assert verify_cache(a, deep=True).ok
    assert load_manifest(a).extra["args"] == {"from": f"{open_store(b).url}@1", "copied_shards": 0}
    # refusals name the problem and change nothing
    other = make_cache(f"{root}/other", "o", fingerprint=OTHER_FINGERPRINT)
    with changes_nothing(a, b, other):
        with pytest.raises(CacheError, match="would appear twice.*already in"):
            append(a, b)  # the same cache twice
        with pytest.raises(OperationRefused, match="same cache"):
            append(a, f"{a}@1")
        with pytest.raises(FingerprintMismatch, match=r"different teacher fingerprint(.|\n)*shift: 3.0 -> 5.0"):
            append(a, other)
        with pytest.raises(ManifestError, match="unknown tag 'nope'"):
            append(a, f"{b}@nope")
        with pytest.raises(ManifestError, match="generation 7 is out of range"):
            append(a, f"{b}@7")
        with pytest.raises(OperationRefused, match="extends the newest one"):
            append(f"{a}@1", other)
    assert list_generations(open_store(a)) == [1, 2]
    # the other cache moves on; a keeps reading the generation it appended
    filter_samples(b, exclude_ids=ids(b)[:1])
    assert ids(a)[6:] == ids(f"{b}@1")
    # gc on either cache takes its own orphan only, never a referenced object
    orphan_a, orphan_b = orphan(a), orphan(b)
    assert gc(a, grace_seconds=0, allow_short_grace=True).deleted == [orphan_a]
    assert gc(b, grace_seconds=0, allow_short_grace=True).deleted == [orphan_b]
    for url in (a, f"{a}@1", b, f"{b}@1"):
        assert verify_cache(url, deep=True).ok, url
    assert same(snapshot(f"{a}@1"), before)
    # a depends on b's objects: with b gone, a's own generation still reads, the append names b
    open_store(b).delete("")
    assert verify_cache(f"{a}@1", deep=True).ok
    problems = verify_cache(a).problems
    assert len(problems) == 2 and f"depends on {open_store(b).url}" in problems[0]
    with pytest.raises(IntegrityError, match="depends on"):
        list(CacheReader(a).iter_records())


@pytest.mark.parametrize("direction, encoding", [("local->s3", "wds"), ("s3->local", "zarr")])
def test_append_across_stores_copies_and_verifies(direction, encoding, tmp_path, s3_bucket):
    local, remote = str(tmp_path / "c"), f"{s3_bucket}/c"
    dst, src = (remote, local) if direction == "local->s3" else (local, remote)
    make_cache(dst, "d", encoding=encoding)
    make_cache(src, "s", encoding=encoding)
    before, objects, src_listing = snapshot(f"{dst}@1"), shard_objects(dst), listing(src)
    result = append(dst, src)
    assert result.copied_shards == 2 and result.referenced_shards == 0
    assert all(s.root is None for s in result.manifest.shards)
    copied = set(shard_objects(dst)) - set(objects)
    assert copied  # renamed next to the receiving cache's own unit00000x shards
    new_paths = {s.path for s in result.manifest.shards[2:]}
    assert {p.split("/")[1] for p in copied} == {p.split("/")[1] for p in new_paths}
    assert listing(src) == src_listing
    assert verify_cache(dst, deep=True).ok
    assert ids(dst) == ids(f"{dst}@1") + ids(src)
    assert same(snapshot(f"{dst}@1"), before)
    other = make_cache(f"{src}-other", "o", encoding=encoding, fingerprint=OTHER_FINGERPRINT)
    with changes_nothing(dst), pytest.raises(FingerprintMismatch, match="shift: 3.0 -> 5.0"):
        append(dst, other)


def test_append_copy_of_a_corrupt_shard_is_refused_and_cleaned_up(tmp_path, s3_bucket):
    src, dst = str(tmp_path / "src"), f"{s3_bucket}/dst"
    make_cache(src, "s")
    make_cache(dst, "d")
    shard = load_manifest(src).shards[1]
    path = tmp_path / "src" / shard.path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the second shard rots; the first copies fine
    path.write_bytes(bytes(data))
    with changes_nothing(dst), pytest.raises(IntegrityError, match="does not match its manifest sha256"):
        append(dst, src)  # the first shard's copy is removed again: no orphan left


@pytest.mark.parametrize("dst_where", ["local", "s3"])
def test_append_from_a_cache_missing_a_shard_is_refused(dst_where, tmp_path, s3_bucket):
    src = make_cache(str(tmp_path / "src"), "s")
    dst = make_cache(str(tmp_path / "dst") if dst_where == "local" else f"{s3_bucket}/dst", "d")
    open_store(src).delete(load_manifest(src).shards[1].path)
    with changes_nothing(dst), pytest.raises(IntegrityError, match="named by the source's manifest is missing"):
        append(dst, src)  # by reference (local) or by copy (s3): either way nothing is committed


def test_filter_by_ids_and_where_then_dedup(root, tmp_path, capsys, monkeypatch):
    layout = small_layout()
    records = make_records(layout, 6, seed=3, prefix="f")
    records[4]["prompt"] = "  F PROMPT 0 –   ÜNÏCODE "  # record 0's prompt, spelled differently
    records[4]["seed"] = records[0]["seed"]
    url = make_cache(f"{root}/f", "f", records=records)
    all_ids = ids(url)
    history = snapshots(url)
    id_file = tmp_path / "drop.txt"
    id_file.write_text(f"# drop two\n{all_ids[1]}\n{all_ids[2]}\n\nnot-an-id\n")
    assert cli(["cache", "filter", url, "--exclude-ids", str(id_file)]) == 0
    assert "1 listed ids are not in the cache, e.g. not-an-id" in capsys.readouterr().out
    assert ids(url) == [i for i in all_ids if i not in all_ids[1:3]]
    m2 = load_manifest(url)
    assert m2.num_samples == 4 and m2.shards == load_manifest(f"{url}@1").shards  # no rewrite
    assert m2.extra["args"]["filter"] == "exclude_ids" and m2.extra["args"]["ids_source"] == str(id_file)
    assert all_same(history, url)
    history = snapshots(url)
    pinned = CacheReader(f"{url}@2")
    result = filter_samples(url, where="seed != 1005 and not startswith(prompt, 'nothing')")
    assert result.removed == 1 and load_manifest(url).generation == 3
    assert all_same(history, url)
    history = snapshots(url)
    d = dedup(url)  # record 4 repeats record 0 up to case, whitespace and NFKC
    assert d.removed == 1 and ids(url) == [all_ids[0], all_ids[3]]
    assert d.manifest.operation == "filter" and d.manifest.num_samples == 2
    assert d.manifest.extra["args"]["filter"] == "dedup" and d.manifest.extra["args"]["removed"] == 1
    assert dedup(url).manifest is None  # nothing left to dedup: nothing committed
    assert all_same(history, url)
    assert [r["sample_id"] for r in pinned.iter_records(fields=["seed"])] == ids(f"{url}@2")
    change = diff(url, 1, 4)
    assert change["removed"] == 4 and change["added"] == 0
    assert set(change["removed_ids"]) == set(all_ids) - {all_ids[0], all_ids[3]}
    keep = filter_samples(url, where=f"sample_id in ['{all_ids[0]}'] or contains(prompt, 'zzz')")
    assert keep.removed == 1 and ids(url) == [all_ids[0]]
    # refusals name the bad part and change nothing
    history = snapshots(url)
    with changes_nothing(url):
        for bad, message in (("seed <", "not a valid expression"),
                             ("colour == 'red'", "unknown column 'colour'"),
                             ("__import__('os').system('true')", "not a condition"),
                             ("seed in ['x']", "do not match the column's type int64"),
                             ("contains(seed, 'x')", "expected a text column"),
                             ("seed > -1", "keeps every live sample"), ("seed < 0", "remove all")):
            with pytest.raises(OperationRefused, match=message):
                filter_samples(url, where=bad)
        with pytest.raises(OperationRefused, match="none of the 1 ids"):
            filter_samples(url, exclude_ids=["nope"])
        with pytest.raises(OperationRefused, match="already removed"):
            filter_samples(url, exclude_ids=[all_ids[1]])
        with pytest.raises(OperationRefused, match="extends the newest one"):
            filter_samples(f"{url}@2", where="seed > 0")
        assert cli(["cache", "filter", url, "--where", "colour == 1"]) == 2
        assert "error: --where 'colour == 1': unknown column 'colour'" in capsys.readouterr().err
    assert all_same(history, url) and list_generations(open_store(url)) == [1, 2, 3, 4, 5]
    assert gc(url, grace_seconds=0, allow_short_grace=True).deleted == []  # every index and shard is referenced
    for gen in range(1, 6):
        assert verify_cache(f"{url}@{gen}", deep=True).ok
    monkeypatch.setenv("COLUMNS", "250")  # the log's table wraps nothing at this width
    assert cli(["cache", "log", url]) == 0
    log = capsys.readouterr().out
    assert re.search(r"^ +3 +filter of gen 2 ", log, re.MULTILINE) and "where=seed != 1005" in log
    assert "filter=dedup" in log and "filter=exclude_ids" in log


def test_merge_keeps_tombstones_and_refuses_existing_output(root):
    a, b = make_cache(f"{root}/a", "a"), make_cache(f"{root}/b", "b", shards=1)
    dropped = ids(a)[0]
    filter_samples(a, exclude_ids=[dropped])
    sources = {a: snapshots(a), b: snapshots(b)}
    listings = {a: listing(a), b: listing(b)}
    c = f"{root}/c"
    result = merge(a, f"{b}@1", output=c)
    assert result.manifest.generation == 1 and result.manifest.operation == "merge"
    assert ids(c) == ids(a) + ids(b) and load_manifest(c).num_samples == 5 + 3
    index = CacheReader(c).index()
    status = dict(zip(index.column("sample_id").to_pylist(), index.column("status").to_pylist()))
    assert status[dropped] == STATUS_REMOVED and len(status) == 9  # a's tombstone stays one
    assert result.copied_shards == 0 and not shard_objects(c)  # same store: all referenced
    names = [s.name for s in load_manifest(c).shards]
    assert len(set(names)) == 3  # b's unit000000 was renamed next to a's
    assert {u: listing(u) for u in (a, b)} == listings
    assert all(all_same(snaps, u) for u, snaps in sources.items())
    assert verify_cache(c, deep=True).ok
    assert load_manifest(c).extra["args"]["from"] == [f"{open_store(a).url}@2", f"{open_store(b).url}@1"]
    other = make_cache(f"{root}/other", "o", fingerprint=OTHER_FINGERPRINT)
    with changes_nothing(a, b, c):
        with pytest.raises(OperationRefused, match="already holds a cache"):
            merge(a, b, output=c)
        with pytest.raises(CacheError, match="would appear twice"):
            merge(a, c, output=f"{root}/d")
        with pytest.raises(FingerprintMismatch, match="shift: 3.0 -> 5.0"):
            merge(a, other, output=f"{root}/d")
        with pytest.raises(OperationRefused, match="same cache"):
            merge(a, f"{a}@1", output=f"{root}/d")
    assert not listing(f"{root}/d")
    change = diff_caches(f"{a}@1", c)
    assert change["added"] == 3 and change["removed"] == 1 and not change["fingerprint_changes"]
    assert diff_caches(a, other)["fingerprint_changes"] == ["shift: 3.0 -> 5.0"]
    for url in (a, b, c):
        orphan_path = orphan(url)
        assert gc(url, grace_seconds=0, allow_short_grace=True).deleted == [orphan_path]
    assert verify_cache(c, deep=True).ok and verify_cache(f"{a}@1", deep=True).ok


def test_merge_across_stores_copies_the_far_cache(tmp_path, s3_bucket):
    near, far, out = str(tmp_path / "near"), f"{s3_bucket}/far", str(tmp_path / "out")
    make_cache(near, "n", encoding="zarr")
    make_cache(far, "f", encoding="zarr")
    result = merge(near, far, output=out)
    assert result.referenced_shards == 2 and result.copied_shards == 2
    roots = [s.root for s in result.manifest.shards]
    assert roots == ["../near"] * 2 + [None] * 2
    assert ids(out) == ids(near) + ids(far) and verify_cache(out, deep=True).ok


def test_caches_that_reference_each_other_move_together(tmp_path):
    a, b = make_cache(str(tmp_path / "team" / "a"), "a"), make_cache(str(tmp_path / "team" / "b"), "b")
    append(a, b)
    expected = ids(a)
    moved = tmp_path / "elsewhere"
    shutil.move(str(tmp_path / "team"), str(moved))
    assert ids(str(moved / "a")) == expected and verify_cache(str(moved / "a"), deep=True).ok
    shutil.rmtree(moved / "b")  # the source goes: the error names the cache a depends on
    report = verify_cache(str(moved / "a"))
    assert not report.ok and any(f"depends on {moved / 'b'}" in p for p in report.problems)


def test_relative_roots_resolve_on_each_kind_of_store():
    assert relative_root("s3://bkt/x/b", "s3://bkt/x/a") == "../b"
    assert resolve_root("s3://bkt/x/a", "../b") == "s3://bkt/x/b"
    assert relative_root("s3://other/b", "s3://bkt/a") == "s3://other/b"  # another bucket
    assert relative_root("/data/b", "s3://bkt/a") == "/data/b"  # another filesystem
    assert relative_root("/data/c/b", "/data/a") == "../c/b"
    assert resolve_root("/data/a", "../c/b") == "/data/c/b"
    with pytest.raises(ManifestError, match="absolute or another URL"):  # issue 17: refused
        resolve_root("/data/a", "s3://bkt/b")


@pytest.mark.parametrize("source", ["wds", "zarr"])
def test_convert_roundtrip_checks_every_tensor(root, source, monkeypatch):
    url = make_cache(f"{root}/src", "v", encoding=source)
    filter_samples(url, exclude_ids=ids(url)[:1])
    history, src_listing = {2: snapshot(f"{url}@2")}, listing(url)
    target = "zarr" if source == "wds" else "wds"
    conv = f"{root}/conv"
    assert cli(["cache", "convert", url, "--to", target, "--output", conv, "--no-progress"]) == 0
    converted = load_manifest(conv)
    assert converted.encoding == target and converted.operation == "convert"
    assert converted.fingerprint == FINGERPRINT and converted.num_samples == 5
    assert converted.layout == load_manifest(url).layout
    assert [s.name for s in converted.shards] == [s.name for s in load_manifest(url).shards]
    args = converted.extra["args"]
    assert (args["source_url"], args["source_generation"]) == (open_store(url).url, 2)
    assert args["source_cache_id"] == load_manifest(url).cache_id
    assert args["checked_tensors"] == 5 * 10  # every tensor field of every live sample
    src_records = list(CacheReader(url).iter_records())
    assert all(map(records_equal, src_records, CacheReader(conv).iter_records()))
    assert verify_cache(conv, deep=True).ok
    assert listing(url) == src_listing and all_same(history, url)
    if root.startswith("s3://"):
        return  # the way back is the other parameter's way there; S3 round trips are slow
    back = convert(conv, to=source, output=f"{root}/back", progress=False)
    assert back.added == 5
    assert all(map(records_equal, src_records, CacheReader(f"{root}/back").iter_records()))


@pytest.mark.parametrize("where, target", [("local", "zarr"), ("local", "wds"), ("s3", "zarr")])
def test_convert_mismatch_aborts_and_commits_nothing(where, target, tmp_path, request, monkeypatch):
    root = str(tmp_path) if where == "local" else request.getfixturevalue("s3_bucket")
    source = "wds" if target == "zarr" else "zarr"
    url = make_cache(f"{root}/src", "v", encoding=source)
    src_listing = listing(url)

    # 1. a value changed between reading and writing (in the second shard, so the first one's
    # converted shard must be removed again): the writer's checksums disagree with the source's
    real_write = convert_module.write_shard_to_store

    def corrupting_write(store, records, **kwargs):
        if kwargs["shard_name"] == "unit000001":
            records[1]["states"] = records[1]["states"].copy()
            records[1]["states"].flat[0] += 1
        return real_write(store, records, **kwargs)

    bad = f"{root}/bad"
    with monkeypatch.context() as patch:
        patch.setattr(convert_module, "write_shard_to_store", corrupting_write)
        with pytest.raises(IntegrityError, match="field states differs from the source as the writer"):
            convert(url, to=target, output=bad, progress=False)
    assert not list_generations(open_store(bad)) and not shard_objects(bad)  # nothing left

    # 2. a value changed inside the encoder, after the checksums were taken: caught on read-back
    module, name = (zarr_shard, "encode_group") if target == "zarr" else (wds, "encode_shard")
    real_encode = getattr(module, name)

    def corrupting_encode(records, *args):
        records[1]["states"] = records[1]["states"].copy()
        records[1]["states"].flat[0] += 1
        return real_encode(records, *args)

    monkeypatch.setattr(module, name, corrupting_encode)
    with pytest.raises(IntegrityError, match="field states differs from the source when read back"):
        convert(url, to=target, output=bad, progress=False)
    assert not list_generations(open_store(bad)) and not shard_objects(bad)
    assert listing(url) == src_listing


def test_cli_commands_succeed_and_refuse_readably(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # the log's table wraps nothing at this width
    a, b = make_cache(str(tmp_path / "a"), "a"), make_cache(str(tmp_path / "b"), "b")
    other = make_cache(str(tmp_path / "o"), "o", fingerprint=OTHER_FINGERPRINT)
    capsys.readouterr()
    ok = [
        (["append", a, "--from", f"{b}@1"], "2 shards referenced in place, 0 copied"),
        (["filter", a, "--where", "seed != 1000"], "generation 3 (filter)"),
        (["dedup", a], "nothing to do: no duplicate"),
        (["merge", f"{a}@1", b, "--output", str(tmp_path / "m")], "generation 1 (merge)"),
        (["convert", a, "--to", "zarr", "--output", str(tmp_path / "z"), "--no-progress"],
         "generation 1 (convert): 8 live samples"),
        (["diff", a, "--from", "1", "--json"], '"added": 4'),
        (["diff", a, "--from", "1"], "added        4 samples (e.g. "),
        (["diff", f"{a}@1", str(tmp_path / "m")], "added        6 samples"),
        (["log", a], f"from={open_store(b).url}@1"),
    ]
    for argv, expected in ok:
        assert cli(["cache", *argv]) == 0, argv
        assert expected in capsys.readouterr().out, argv
    bad = [
        (["append", a, "--from", other], "shift: 3.0 -> 5.0"),
        (["append", a, "--from", f"{b}@nope"], "unknown tag 'nope'"),
        (["append", a, "--from", f"{b}@9"], "generation 9 is out of range"),
        (["filter", a, "--where", "seed >"], "not a valid expression"),
        (["filter", a, "--exclude-ids", str(tmp_path / "missing.txt")], "does not exist"),
        (["merge", a, b, "--output", str(tmp_path / "m")], "already holds a cache"),
        (["convert", a, "--to", "wds", "--output", str(tmp_path / "z"), "--no-progress"],
         "is already wds"),
        (["diff", a, b, other], "one URL (with --from/--to) or two"),
        (["diff", a], "give --from N"),
    ]
    listings = {u: listing(u) for u in (a, b, other, str(tmp_path / "m"), str(tmp_path / "z"))}
    for argv, expected in bad:
        assert cli(["cache", *argv]) == 2, argv
        out = capsys.readouterr().err
        assert out.startswith("error: ") and expected in out, (argv, out)
    assert {u: listing(u) for u in listings} == listings
    for command in ("append", "filter", "dedup", "merge", "convert", "diff"):
        with pytest.raises(SystemExit) as exit_:
            cli(["cache", command, "--help"])
        assert exit_.value.code == 0
    assert "references the other cache's shards" in " ".join(capsys.readouterr().out.split())


def test_diff_prints_a_table_for_people(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    a = make_cache(str(tmp_path / "a"), "a")
    other = make_cache(str(tmp_path / "o"), "o", fingerprint=OTHER_FINGERPRINT)
    capsys.readouterr()
    assert cli(["cache", "diff", a, other]) == 0
    out = capsys.readouterr().out
    lines = [line.rstrip() for line in out.splitlines()]
    assert max(map(len, lines)) <= 80 and "{" not in out and '"' not in out  # no JSON, no reprs
    assert lines[0].startswith("cache diff: ") and " -> " in " ".join(lines[:3])
    rows = {line.split()[0]: " ".join(line.split()[1:]) for line in lines[1:] if line[:1] != " "}
    assert rows["added"].startswith("6 samples (e.g. ") and rows["removed"].startswith("6 samples")
    assert rows["fingerprint"] == "shift: 3.0 -> 5.0" and rows["layout"] == "unchanged"
    assert cli(["cache", "diff", a, "--from", "1", "--to", "1"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "added 0 samples removed 0 samples fingerprint unchanged" in text
    assert "cache id same cache" in text
