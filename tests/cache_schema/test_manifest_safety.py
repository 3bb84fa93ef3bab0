"""Issue 17: a cache from someone else. Its manifest pins what a reader trusts (the index's
sha256 and size, paths inside the cache root or a root its lineage records, each shard and
sample id once), and every entry point (verify, the reader, the loader, append, merge, convert,
the CLI) refuses a hostile one with one error line, before reading anything it names.

A forger here rewrites the manifest body *and* its body checksum (anyone can): the checks must
hold on the content, not only on the checksum."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
from conftest import FINGERPRINT, make_records, small_layout

from cache_schema import (
    CacheError,
    CacheReader,
    CacheWriter,
    IntegrityError,
    ManifestError,
    append,
    merge,
    open_store,
    read_manifest,
)
from cache_schema.checksum import sha256_bytes
from cache_schema.convert import convert
from cache_schema.errors import UnpinnedIndexWarning
from cache_schema.fingerprint import canonical_json
from cache_schema.verify import verify_cache
from pipeline.cli import main as cli
from student_train.data import CacheStream

pytestmark = pytest.mark.filterwarnings("error::cache_schema.errors.UnpinnedIndexWarning")


def make_cache(path: Path, prefix: str = "p", n: int = 4, encoding: str = "wds") -> str:
    layout = small_layout()
    with CacheWriter(str(path), layout=layout, fingerprint=FINGERPRINT, encoding=encoding,
                     samples_per_shard=2) as writer:
        for record in make_records(layout, n, prefix=prefix):
            writer.write(record)
    return str(path)


def manifest_file(cache: str, generation: int = 1) -> Path:
    return Path(cache) / "manifests" / f"{generation:06d}.json"


def forge(cache: str, mutate, generation: int = 1) -> None:
    """Rewrite a manifest's body with ``mutate(body)`` and give it a valid body checksum."""
    path = manifest_file(cache, generation)
    body = json.loads(path.read_text())
    body.pop("body_sha256")
    mutate(body)
    body["body_sha256"] = sha256_bytes(canonical_json(body).encode())
    path.write_text(json.dumps(body, sort_keys=True, indent=1))


def point_outside(body) -> None:
    body["shards"][0]["path"] = "shards/../../../../../../etc/passwd"


def list_twice(body) -> None:
    body["shards"].append(dict(body["shards"][0]))


HOSTILE = {
    "dotdot path": (point_outside, "'..' segment"),
    "absolute path": (lambda b: b["shards"][0].update(path="/etc/passwd"), "absolute"),
    "scheme path": (lambda b: b["shards"][0].update(path="http://127.0.0.1:9/x.tar"), "scheme"),
    "not below shards/": (lambda b: b["shards"][0].update(path="manifests/000001.json"),
                          "not below shards/"),
    "absolute root": (lambda b: (b["shards"][0].update(root="/etc"),
                                 b["lineage"].update(roots=["/etc"])), "absolute or another URL"),
    "http root": (lambda b: (b["shards"][0].update(root="http://127.0.0.1:9/c"),
                             b["lineage"].update(roots=["http://127.0.0.1:9/c"])),
                  "absolute or another URL"),
    "root not in lineage": (lambda b: b["shards"][0].update(root="../other"),
                            "lineage does not record"),
    "shard listed twice": (list_twice, "listed twice"),
    "same path under two names": (lambda b: b["shards"].append(
        {**b["shards"][0], "name": "again"}), "listed twice"),
    "index outside": (lambda b: b.update(index_path="../../etc/passwd"), "index_path"),
    "unpinned schema 2": (lambda b: b.pop("index_sha256"), "must pin its index"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_manifest_is_refused_at_load(case, tmp_path):
    cache = make_cache(tmp_path / "c")
    mutate, message = HOSTILE[case]
    forge(cache, mutate)
    with pytest.raises(ManifestError, match=message):
        read_manifest(open_store(cache), 1)
    report = verify_cache(cache)
    assert not report.ok and any(message in p for p in report.problems), report.problems


@pytest.mark.parametrize("mutate", [point_outside, list_twice], ids=["outside", "twice"])
def test_every_entry_point_refuses_with_one_error_line(mutate, tmp_path, capsys):
    cache, other = make_cache(tmp_path / "c"), make_cache(tmp_path / "o", prefix="o")
    forge(cache, mutate)
    for call in (lambda: CacheReader(cache),
                 lambda: CacheStream(cache, fields=["seed"]),  # the trainers' loader
                 lambda: append(other, cache), lambda: append(cache, other),
                 lambda: merge(cache, other, output=str(tmp_path / "m")),
                 lambda: convert(cache, to="zarr", output=str(tmp_path / "z"), progress=False)):
        with pytest.raises(ManifestError, match="listed twice|'..' segment"):
            call()
    assert not (tmp_path / "m").exists() and not (tmp_path / "z" / "manifests").exists()
    assert len(open_store(other).list("manifests")) == 1  # append wrote nothing
    capsys.readouterr()
    for argv in (["cache", "verify", cache], ["cache", "verify", cache, "--deep"],
                 ["cache", "append", other, "--from", cache],
                 ["cache", "merge", cache, other, "--output", str(tmp_path / "m2")],
                 ["cache", "convert", cache, "--to", "zarr", "--output", str(tmp_path / "z2"),
                  "--no-progress"]):
        assert cli(argv) == 2, argv
        out, err = capsys.readouterr()
        lines = [line for line in (out + err).splitlines() if line.strip()]
        assert "Traceback" not in out + err
        bad = [line for line in lines if "listed twice" in line or "'..' segment" in line]
        if argv[1] == "verify":  # one CORRUPT line per manifest, then the summary
            assert len(bad) == 1 and lines[-1].startswith("FAILED"), lines
        else:
            assert len(lines) == 1 and lines[0].startswith("error: manifest"), lines


def test_nothing_outside_the_root_is_read(tmp_path, monkeypatch):
    """The refusal comes before any open: a read of /etc/passwd would show in the store."""
    cache = make_cache(tmp_path / "c")
    forge(cache, point_outside)
    opened = []
    real_cat = type(open_store(cache).fs).cat_file
    monkeypatch.setattr(type(open_store(cache).fs), "cat_file",
                        lambda self, path, *a, **k: (opened.append(path), real_cat(self, path, *a, **k))[1])
    with pytest.raises(ManifestError):
        CacheReader(cache)
    assert opened and all(p.startswith(str(tmp_path)) for p in opened), opened


def test_a_flipped_index_byte_and_a_deleted_index_fail_shallow_verify(tmp_path, capsys):
    cache = make_cache(tmp_path / "c")
    index = next((Path(cache) / "index").iterdir())
    data = index.read_bytes()
    pos = data.index(b"ok")  # a status value, as the probe flipped it
    index.write_bytes(data[:pos] + b"ox" + data[pos + 2:])
    report = verify_cache(cache)
    assert not report.ok and "does not match the sha256/size" in report.problems[0]
    with pytest.raises(IntegrityError, match="sha256/size its manifest"):
        list(CacheStream(cache, fields=["seed"]).reader.iter_records())
    index.unlink()
    assert cli(["cache", "verify", cache]) == 2
    assert "sample index" in capsys.readouterr().out
    with pytest.raises(IntegrityError, match="sample index .* is missing"):
        CacheStream(cache, fields=["seed"])


def test_an_index_that_disagrees_with_its_manifest_is_refused(tmp_path):
    """A forger who re-pins a rewritten index still meets the row checks."""
    import pyarrow as pa

    from cache_schema.index import index_bytes, read_index

    cache = make_cache(tmp_path / "c")
    store = open_store(cache)
    manifest = read_manifest(store, 1)
    table = read_index(store, manifest)
    ids = table.column("sample_id").to_pylist()
    variants = {
        "appears twice": table.set_column(0, "sample_id", pa.array([ids[0]] + ids[1:-1] + [ids[0]])),
        "not 'ok' or 'removed'": table.set_column(5, "status", pa.array(["gone"] * len(ids))),
        "does not list": table.set_column(1, "shard", pa.array(["elsewhere"] * len(ids))),
        "truncated": table.slice(0, len(ids) - 1),
    }
    for message, bad in variants.items():
        data = index_bytes(bad)
        Path(store.path(manifest.index_path)).write_bytes(data)
        forge(cache, lambda b, d=data: b.update(index_sha256=sha256_bytes(d), index_bytes=len(d)))
        with pytest.raises(IntegrityError, match=message):
            CacheReader(cache).index()
        assert any(message in p for p in verify_cache(cache).problems), message


def _rewrite_member(tar: Path, member_suffix: str, old: bytes, new: bytes) -> str:
    """Replace ``old`` by ``new`` (same length) inside the first member ending in
    ``member_suffix``, fixing the tar header checksum: a forged but well-formed shard."""
    import tarfile

    data = bytearray(tar.read_bytes())
    with tarfile.open(tar) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith(member_suffix))
    start = member.offset_data
    body = bytes(data[start:start + member.size])
    assert old in body and len(old) == len(new)
    data[start:start + member.size] = body.replace(old, new, 1)
    tar.write_bytes(bytes(data))
    return member.name.split(".", 1)[0]


def test_deep_verify_names_an_altered_prompt_and_id(tmp_path, capsys):
    """Text and ids carry checksums too: a forger who also re-pins the shard sha256 in the
    manifest is caught by --deep, naming sample and field; shallow verify cannot see it."""
    cache = make_cache(tmp_path / "c")
    shard = read_manifest(open_store(cache), 1).shards[0]
    tar = Path(cache) / shard.path
    sid = _rewrite_member(tar, ".prompt.txt", b"prompt", b"PROMPT")
    digest = sha256_bytes(tar.read_bytes())
    forge(cache, lambda b: b["shards"][0].update(sha256=digest))
    assert verify_cache(cache).ok
    report = verify_cache(cache, deep=True)
    assert len(report.problems) == 1 and f"sample {sid} field prompt fails its checksum" in \
        report.problems[0], report.problems
    with pytest.raises(IntegrityError, match="field prompt fails"):
        list(CacheReader(cache).iter_records(verify=True))
    assert cli(["cache", "verify", cache, "--deep"]) == 2
    assert "field prompt fails its checksum" in capsys.readouterr().out


def test_deep_verify_counts_every_field(tmp_path):
    cache = make_cache(tmp_path / "c", n=4)
    report = verify_cache(cache, deep=True)
    # 4 samples x (sample_id, prompt, negative_prompt, seed + 10 tensors): text and ids included
    assert report.ok and report.checked_samples == 4 and report.checked_fields == 4 * 14


def test_schema_1_caches_keep_reading_with_a_warning(tmp_path, capsys):
    """Decision (README/DESIGN): a manifest written before the index pin (schema 1) is read,
    with an UnpinnedIndexWarning; verify says so; its path rules apply all the same."""
    cache = make_cache(tmp_path / "c")

    def schema_1(body):
        body["schema_version"] = 1
        body.pop("index_sha256"), body.pop("index_bytes"), body["lineage"].pop("roots")
    forge(cache, schema_1)
    with pytest.warns(UnpinnedIndexWarning, match="does not pin its sample index"):
        records = list(CacheReader(cache).iter_records(verify=True))
    assert len(records) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnpinnedIndexWarning)
        report = verify_cache(cache, deep=True)
        assert report.ok and report.warnings, report
        assert cli(["cache", "verify", cache]) == 0
        assert "WARNING" in capsys.readouterr().out
        forge(cache, point_outside)
        with pytest.raises(ManifestError, match="'..' segment"):
            CacheReader(cache)


def test_append_by_reference_records_its_root_in_the_lineage(tmp_path):
    a, b = make_cache(tmp_path / "a"), make_cache(tmp_path / "b", prefix="b")
    append(a, b)
    body = json.loads(manifest_file(a, 2).read_text())
    assert body["lineage"]["roots"] == ["../b"] and body["index_sha256"]
    assert verify_cache(a, deep=True).ok
    # a referenced root that is not a cache is refused, not read
    shutil.rmtree(Path(b) / "manifests")
    with pytest.raises(CacheError, match="holds no committed cache"):
        list(CacheReader(a).iter_records())
