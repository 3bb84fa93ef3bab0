"""A manifest create whose reply was lost (the retry finds the object) is a success, not a
conflict: the generation and its index stay intact."""

from __future__ import annotations

from conftest import FINGERPRINT, make_records, small_layout

from cache_schema import CacheReader, commit_generation, load_manifest, write_shard
from cache_schema.errors import AlreadyExists
from cache_schema.store import Store
from cache_schema.verify import verify_cache


def test_lost_reply_on_manifest_create_is_not_a_conflict(tmp_path, monkeypatch):
    url, layout = str(tmp_path / "c"), small_layout()
    shard = write_shard(url, make_records(layout, 3), layout=layout, encoding="wds", shard_name="u0")
    real = Store.put_create_only

    def put_then_lose_reply(self, rel, data):
        real(self, rel, data)  # the server took it...
        if rel.startswith("manifests/"):
            raise AlreadyExists(f"{rel} already exists")  # ...and the retry saw it there

    monkeypatch.setattr(Store, "put_create_only", put_then_lose_reply)
    manifest = commit_generation(url, shards=[shard], layout=layout, fingerprint=FINGERPRINT)
    monkeypatch.undo()
    assert manifest.generation == 1 and load_manifest(url) == manifest
    assert len(CacheReader(url)) == 3 and verify_cache(url, deep=True).ok
