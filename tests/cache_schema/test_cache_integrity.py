"""Corruption, truncation, schema versions, killed writers and racing writers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import FINGERPRINT, make_records, small_layout

from cache_schema import (
    CacheReader,
    CacheWriter,
    FingerprintMismatch,
    GenerationConflict,
    SchemaVersionError,
    commit_generation,
    list_generations,
    load_manifest,
    open_store,
    write_shard,
)
from cache_schema.lease import LEASE_DIR, live_leases
from cache_schema.verify import verify_cache
from cache_schema.versioning import gc
from pipeline.cli import main as cli


def _cache(path: Path | str, encoding: str, n=6, per_shard=3) -> None:
    layout = small_layout()
    with CacheWriter(str(path), layout=layout, fingerprint=FINGERPRINT, encoding=encoding,
                     samples_per_shard=per_shard) as writer:
        for record in make_records(layout, n):
            writer.write(record)


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("encoding", ["wds", "zarr"])
def test_flipped_byte_in_any_shard_is_reported(encoding, tmp_path, capsys):
    _cache(tmp_path, encoding)
    assert cli(["cache", "verify", str(tmp_path), "--deep"]) == 0
    files = sorted(p for p in (tmp_path / "shards").rglob("*") if p.is_file())
    for target in files[:: max(1, len(files) // 4)]:  # several objects, several offsets
        for offset in (0, len(target.read_bytes()) // 2, -1):
            _flip(target, offset)
            assert cli(["cache", "verify", str(tmp_path), "--deep"]) == 2
            out = capsys.readouterr().out
            shard_dir = target.relative_to(tmp_path).parts[1]
            assert shard_dir in out, out
            _flip(target, offset)  # restore
    assert cli(["cache", "verify", str(tmp_path), "--deep"]) == 0


def test_flipped_byte_in_manifest_and_truncated_shard(tmp_path, capsys):
    _cache(tmp_path, "wds")
    manifest = tmp_path / "manifests" / "000001.json"
    original = manifest.read_bytes()
    for offset in (5, len(original) // 3, len(original) - 3):
        _flip(manifest, offset)
        assert cli(["cache", "verify", str(tmp_path)]) == 2
        assert "000001" in capsys.readouterr().out
        manifest.write_bytes(original)
    shard = next((tmp_path / "shards").glob("*.tar"))
    shard.write_bytes(shard.read_bytes()[:-700])
    assert cli(["cache", "verify", str(tmp_path)]) == 2
    assert shard.name in capsys.readouterr().out


def test_newer_schema_version_is_refused(tmp_path):
    _cache(tmp_path, "wds")
    path = tmp_path / "manifests" / "000001.json"
    body = json.loads(path.read_text())
    body["schema_version"] = 99
    path.write_text(json.dumps(body))
    with pytest.raises(SchemaVersionError, match="upgrade s2dit"):
        CacheReader(str(tmp_path))


WRITER_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from conftest import FINGERPRINT, make_records, small_layout
    from cache_schema import CacheWriter
    layout = small_layout()
    with CacheWriter({url!r}, layout=layout, fingerprint=FINGERPRINT, encoding={enc!r},
                     samples_per_shard=2, lease_ttl={ttl}) as w:
        for i, r in enumerate(make_records(layout, 400, seed=7)):
            w.write(r)
            if i == 5:
                print("writing", flush=True)
""")


def _objects(url: str) -> set[str]:
    store = open_store(url)
    return {obj for top in ("shards", "index", "manifests") for rel in store.list(top)
            for obj in (store.walk_files(rel) or {rel: 0})}


@pytest.mark.parametrize("where,encoding", [("local", "wds"), ("local", "zarr"), ("s3", "wds")])
def test_writer_killed_mid_write_leaves_nothing_visible_and_gc_takes_exactly_its_orphans(
        where, encoding, tmp_path, request):
    url = str(tmp_path / "c") if where == "local" else request.getfixturevalue("s3_bucket") + "/c"
    _cache(url, encoding, n=4)
    committed = _objects(url)
    ttl = 5.0
    script = WRITER_SCRIPT.format(tests=str(Path(__file__).parent), url=url, enc=encoding, ttl=ttl)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # its lease is still live (it cannot know it died yet): gc keeps what it wrote
    early = gc(url, grace_seconds=0, allow_short_grace=True)
    assert early.orphans and early.kept_leased == early.orphans and not early.deleted
    deadline = time.time() + ttl + 10
    while live_leases(open_store(url)).live and time.time() < deadline:
        time.sleep(0.5)
    assert not live_leases(open_store(url)).live  # no heartbeat for ttl: the lease expired
    assert list_generations(open_store(url)) == [1]
    assert len(list(CacheReader(url).iter_records(fields=["seed"]))) == 4
    assert verify_cache(url, deep=True).ok
    left_behind = _objects(url) - committed
    assert len(left_behind) > 2  # the killed writer's shards exist but no manifest names them
    # --dry-run names the orphans and deletes nothing; gc then deletes exactly them
    dry = gc(url, grace_seconds=0, allow_short_grace=True, dry_run=True)
    assert dry.orphans and not dry.deleted and _objects(url) == committed | left_behind
    done = gc(url, grace_seconds=0, allow_short_grace=True)
    assert sorted(done.deleted) == sorted(dry.orphans) and done.expired_leases == dry.expired_leases
    assert _objects(url) == committed and not open_store(url).list(LEASE_DIR)
    assert verify_cache(url, deep=True).ok
    assert len(list(CacheReader(url).iter_records(fields=["seed"]))) == 4


@pytest.mark.parametrize("where", ["local", "s3"])
def test_racing_writers_lose_nothing(where, tmp_path, request):
    url = str(tmp_path) if where == "local" else request.getfixturevalue("s3_bucket") + "/race"
    layout = small_layout()
    shards = [write_shard(url, make_records(layout, 2, seed=s, prefix=f"w{s}"), layout=layout,
                          encoding="wds", shard_name=f"unit{s}") for s in range(4)]
    barrier = threading.Barrier(4)
    results, errors = [], []

    def commit(shard):
        barrier.wait()
        try:
            results.append(commit_generation(url, shards=[shard], layout=layout,
                                             fingerprint=FINGERPRINT))
        except Exception as exc:  # noqa: BLE001 - any failure of a racing writer is reported below
            errors.append(exc)

    threads = [threading.Thread(target=commit, args=(s,)) for s in shards]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert sorted(m.generation for m in results) == [1, 2, 3, 4]
    final = load_manifest(url)
    assert sorted(s.name for s in final.shards) == [f"unit{s}" for s in range(4)]
    assert final.num_samples == 8
    # an explicit parent that is no longer newest is a clean conflict, nothing written
    with pytest.raises(GenerationConflict):
        commit_generation(url, shards=shards[:1], layout=layout, fingerprint=FINGERPRINT, parent=2)
    with pytest.raises(FingerprintMismatch, match="steps: 6 -> 7"):
        commit_generation(url, shards=shards[:1], layout=layout,
                          fingerprint={**FINGERPRINT, "steps": 7})
    assert list_generations(open_store(url)) == [1, 2, 3, 4]


def test_ls_and_show(tmp_path, capsys):
    _cache(tmp_path, "zarr")
    assert cli(["cache", "ls", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["samples"] == 6 and rows[0]["encoding"] == "zarr"
    assert cli(["cache", "show", str(tmp_path) + "@1"]) == 0
    assert json.loads(capsys.readouterr().out)["generation"] == 1
    assert cli(["cache", "show", str(tmp_path), "--generation", "5"]) == 2
    assert "out of range" in capsys.readouterr().err
