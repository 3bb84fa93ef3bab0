"""gc against running writers (issue 28): writers hold a lease that gc reads, a commit refuses
shards that are missing or truncated, a dead writer's lease expires, and the grace has a floor."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import FINGERPRINT, make_records, small_layout

from cache_schema import (
    CacheReader,
    CacheWriter,
    IntegrityError,
    OperationRefused,
    commit_generation,
    list_generations,
    open_store,
    write_shard,
    writer_lease,
)
from cache_schema.lease import LEASE_DIR, WriterLease, live_leases
from cache_schema.verify import verify_cache
from cache_schema.versioning import MIN_GRACE_SECONDS, gc
from pipeline.cli import main as cli

SHORT = {"grace_seconds": 0, "allow_short_grace": True}


@pytest.fixture(params=["local", "s3"])
def url(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "c")
    return request.getfixturevalue("s3_bucket") + "/c"


def _age(url: str, rel: str, seconds: float) -> None:
    """Backdate a local object (every file of a Zarr group) by ``seconds``."""
    for path in [p for p in Path(url, rel).rglob("*") if p.is_file()] or [Path(url, rel)]:
        stamp = time.time() - seconds
        os.utime(path, (stamp, stamp))


@pytest.mark.parametrize("encoding", ["wds", "zarr"])
def test_gc_between_shard_write_and_commit_keeps_the_in_flight_shards(url, encoding, capsys):
    layout = small_layout()
    writer = CacheWriter(url, layout=layout, fingerprint=FINGERPRINT, encoding=encoding,
                         samples_per_shard=2)
    for record in make_records(layout, 4):
        writer.write(record)
    in_flight = sorted(f.result().path for f in writer._pending)  # both shards are stored
    assert len(in_flight) == 2 and not list_generations(open_store(url))
    result = gc(url, **SHORT)
    assert result.deleted == [] and sorted(result.kept_leased) == in_flight
    assert len(result.live_leases) == 1
    # the same through the command line (grace 1s, as the issue ran it), once they are older
    time.sleep(1.5)
    assert cli(["cache", "gc", url, "--grace", "1s", "--allow-short-grace"]) == 0
    assert "2 kept for 1 running writer(s); 0 deleted" in capsys.readouterr().out
    manifest = writer.commit()
    assert sorted(s.path for s in manifest.shards) == in_flight
    assert verify_cache(url, deep=True).ok
    assert len(list(CacheReader(url).iter_records(fields=["seed"]))) == 4
    assert not open_store(url).list(LEASE_DIR)  # the lease ended with the commit


def test_distributed_writers_keep_their_shards_and_old_orphans_still_go(tmp_path):
    """write_shard + commit_generation (the job's form) under ``writer_lease``; an orphan
    older than the lease's start is still gc's (local: its timestamp is set back)."""
    url, layout = str(tmp_path / "c"), small_layout()
    old = write_shard(url, make_records(layout, 2, seed=9, prefix="old"), layout=layout,
                      encoding="wds", shard_name="old").path
    _age(url, old, 2 * 3600)
    with writer_lease(url, what="test job"):
        shard = write_shard(url, make_records(layout, 2), layout=layout, encoding="wds",
                            shard_name="unit0")
        result = gc(url, **SHORT)
        assert result.deleted == [old] and result.kept_leased == [shard.path]
        commit_generation(url, shards=[shard], layout=layout, fingerprint=FINGERPRINT)
    assert verify_cache(url, deep=True).ok
    assert gc(url, **SHORT).orphans == []


def test_a_dead_writers_lease_expires_and_no_longer_protects(url):
    layout, store = small_layout(), open_store(url)
    dead = WriterLease(store, what="killed writer", ttl=4.0)
    dead.started_at = time.time()  # started like start() does, without its heartbeat thread
    dead.renew()
    orphan = write_shard(url, make_records(layout, 2), layout=layout, encoding="wds",
                         shard_name="unit0").path
    dead.renew()  # its last heartbeat (the shard write may take seconds on a loaded machine)
    first = gc(url, **SHORT)
    assert first.kept_leased == [orphan] and first.live_leases == [dead.rel]
    time.sleep(5.5)  # > ttl (and S3's one-second timestamps): the writer died
    second = gc(url, **SHORT)
    assert second.deleted == [orphan] and second.expired_leases == [dead.rel]
    assert not store.list(LEASE_DIR)  # gc removed the expired lease


def test_an_unreadable_lease_protects_everything(tmp_path):
    url, layout = str(tmp_path / "c"), small_layout()
    orphan = write_shard(url, make_records(layout, 2), layout=layout, encoding="wds",
                         shard_name="unit0").path
    _age(url, orphan, 2 * 3600)
    (tmp_path / "c" / LEASE_DIR).mkdir()
    (tmp_path / "c" / LEASE_DIR / "w.json").write_text('{"writer": "w", "star')  # cut short
    assert live_leases(open_store(url)).protect_from == float("-inf")
    assert gc(url, **SHORT).kept_leased == [orphan]


@pytest.mark.parametrize("encoding", ["wds", "zarr"])
def test_a_commit_with_a_missing_or_truncated_shard_is_refused(url, encoding):
    layout, store = small_layout(), open_store(url)
    shards = [write_shard(url, make_records(layout, 2, seed=i, prefix=f"s{i}"), layout=layout,
                          encoding=encoding, shard_name=f"unit{i}") for i in range(3)]
    store.delete(shards[1].path)  # what gc did to a running job before leases
    with pytest.raises(IntegrityError, match=r"shard unit1 .* is missing; refusing to commit"):
        commit_generation(url, shards=shards, layout=layout, fingerprint=FINGERPRINT)
    # truncated: the tar cut short, or one object of the Zarr group cut short
    target = shards[2].path if encoding == "wds" else max(store.walk_files(shards[2].path))
    data = store.read_bytes(target)
    store.put_bytes(target, data[: len(data) // 2])
    stored = shards[2].bytes - (len(data) - len(data) // 2)
    with pytest.raises(IntegrityError, match=rf"shard unit2 .* has {stored} bytes "
                                             rf"stored, its writer recorded {shards[2].bytes}"):
        commit_generation(url, shards=[shards[0], shards[2]], layout=layout,
                          fingerprint=FINGERPRINT)
    assert not list_generations(store)  # nothing committed, no index written
    assert not store.list("index")
    commit_generation(url, shards=shards[:1], layout=layout, fingerprint=FINGERPRINT)
    assert verify_cache(url, deep=True).ok


def test_a_grace_below_the_minimum_is_refused(tmp_path, capsys):
    url, layout = str(tmp_path / "c"), small_layout()
    orphan = write_shard(url, make_records(layout, 2), layout=layout, encoding="wds",
                         shard_name="unit0").path
    _age(url, orphan, 2 * 3600)
    with pytest.raises(OperationRefused, match="below the minimum of 3600 s"):
        gc(url, grace_seconds=MIN_GRACE_SECONDS - 1)
    assert cli(["cache", "gc", url, "--grace", "1s"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "--allow-short-grace" in err
    assert open_store(url).exists(orphan)  # nothing deleted
    assert gc(url, grace_seconds=MIN_GRACE_SECONDS).deleted == [orphan]
