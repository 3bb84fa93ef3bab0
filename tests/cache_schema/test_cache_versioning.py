"""log, tag (URL@NAME), diff and gc: earlier generations stay readable, gc takes only orphans."""

from __future__ import annotations

import re

import pytest
from conftest import FINGERPRINT, make_records, small_layout

from cache_schema import CacheReader, ManifestError, commit_generation, load_manifest, write_shard
from cache_schema.verify import verify_cache
from cache_schema.versioning import diff, gc, lineage, list_tags, set_tag
from pipeline.cli import main as cli


def _ids(url):
    return [r["sample_id"] for r in CacheReader(url).iter_records(fields=["seed"])]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_tags_pins_diff_and_gc(where, tmp_path, request, capsys):
    url = str(tmp_path / "c") if where == "local" else request.getfixturevalue("s3_bucket") + "/c"
    layout = small_layout()
    shards = [write_shard(url, make_records(layout, 3, seed=i, prefix=f"s{i}"), layout=layout,
                          encoding="wds", shard_name=f"unit{i}") for i in range(3)]
    commit_generation(url, shards=shards[:1], layout=layout, fingerprint=FINGERPRINT)
    assert set_tag(url, "v1") == 1
    pinned = _ids(f"{url}@v1")
    commit_generation(url, shards=shards[1:2], layout=layout, fingerprint=FINGERPRINT)
    assert _ids(f"{url}@v1") == pinned == _ids(f"{url}@1")  # pinned readers see the same samples
    assert len(_ids(url)) == 6
    assert [r["generation"] for r in lineage(url)] == [2, 1]
    assert list_tags(url) == {"v1": 1}
    change = diff(url, "v1", 2)
    assert change["added"] == 3 and change["removed"] == 0 and not change["fingerprint_changes"]
    with pytest.raises(ManifestError, match="unknown tag"):
        CacheReader(f"{url}@nope")
    with pytest.raises(ManifestError, match="out of range"):
        CacheReader(f"{url}@9")
    # shards[2] was written but never committed: the only orphan
    orphan = shards[2].path
    dry = gc(url, grace_seconds=0, allow_short_grace=True, dry_run=True)
    assert dry.orphans == [orphan] and not dry.deleted
    assert gc(url, grace_seconds=3600).deleted == []  # younger than the grace period
    done = gc(url, grace_seconds=0, allow_short_grace=True)
    assert done.deleted == [orphan]
    assert verify_cache(url, deep=True).ok and verify_cache(f"{url}@1", deep=True).ok
    assert cli(["cache", "log", url]) == 0
    assert re.search(r"^ +1 +v1 +create ", capsys.readouterr().out, re.MULTILINE)
    assert cli(["cache", "tag", url, "12"]) == 2  # a bare number would read as a generation
    assert load_manifest(url).generation == 2  # refusals changed nothing
