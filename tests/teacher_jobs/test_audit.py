"""Issue 17: `cache audit` regenerates records with the fingerprinted teacher and compares them
with the cached bytes. On an analytic CPU cache every sampled record is bit-exact; a tensor
rewritten with other valid values *and correct checksums* (verify --deep cannot see it) is
named by the audit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cache_schema import CacheReader, CacheWriter, FingerprintMismatch, list_generations, open_store
from cache_schema.checksum import record_checksums, sha256_bytes
from cache_schema.encodings import get_encoding
from cache_schema.fields import CHECKSUMS_KEY
from cache_schema.fingerprint import canonical_json
from cache_schema.verify import verify_cache
from pipeline.cli import main as cli
from teacher_jobs.audit import audit_cache
from teacher_jobs.config import JobConfig
from teacher_jobs.sampler import cache_fingerprint, record_trajectories
from teacher_jobs.teachers import make_settings

PROMPTS = [f"a {c} {o} moving {m}" for o in ("square", "ring")
           for c in ("red", "green", "blue") for m in ("left", "right")]  # 12


def _config(**kw) -> JobConfig:
    return JobConfig(teacher=make_settings({"kind": "analytic", "steps": 4}), keep_steps="all",
                     seed=3, **kw)


def make_analytic_cache(url: str, config: JobConfig, *, record_config: bool = False) -> None:
    """What the job's actors do, in one process: the job's fingerprint, its sample ids and
    noise, one shard per 4 samples; ``record_config``: the manifest records the job's resolved
    config, as the job's commits do."""
    plan = config.teacher.driver_plan(config.video)
    fingerprint = cache_fingerprint(plan.fingerprint, keep_steps=config.keep_step_indices,
                                    global_seed=config.seed, half_dtype=config.half_dtype,
                                    negative_prompt=config.negative_prompt)
    teacher = config.teacher.build(config.video, device="cpu")
    from cache_schema import fingerprint_digest

    records, rejected = record_trajectories(
        teacher, PROMPTS, list(range(len(PROMPTS))), global_seed=config.seed,
        keep_steps=config.keep_step_indices, negative_prompt=config.negative_prompt,
        half_dtype=config.half_dtype, fingerprint_digest=fingerprint_digest(fingerprint))
    assert not rejected
    with CacheWriter(url, layout=teacher.layout(config.keep_step_indices, config.half_dtype),
                     fingerprint=fingerprint, samples_per_shard=4,
                     config=config.to_json() if record_config else None) as writer:
        for record in records:
            writer.write(record)


@pytest.fixture
def cache(tmp_path) -> str:
    url = str(tmp_path / "c")
    make_analytic_cache(url, _config())
    return url


def _tamper_one_tensor(url: str) -> str:
    """Rewrite x0 of the second sample of the first shard with other finite values, recompute
    its checksums, the shard's sha256 and size, and the manifest's body checksum."""
    store = open_store(url)
    path = Path(url) / "manifests" / "000001.json"
    body = json.loads(path.read_text())
    shard = CacheReader(url).manifest.shards[0]
    records = list(CacheReader(url).read_shard(shard, keep_checksums=True))
    victim = records[1]
    victim["x0"] = (victim["x0"].astype(np.float32) * 0.5 + 0.25).astype(victim["x0"].dtype)
    victim[CHECKSUMS_KEY] = {**victim[CHECKSUMS_KEY], **record_checksums(victim)}
    data = get_encoding("wds").encode(records, CacheReader(url).layout)[""]
    Path(store.path(shard.path)).write_bytes(data)
    body.pop("body_sha256")
    body["shards"][0].update(sha256=sha256_bytes(data), bytes=len(data))
    body["body_sha256"] = sha256_bytes(canonical_json(body).encode())
    path.write_text(json.dumps(body, sort_keys=True, indent=1))
    return victim["sample_id"]


def test_audit_of_an_analytic_cache_is_bit_exact_and_recorded(cache):
    manifests_before = sorted(open_store(cache).list("manifests"))
    result = audit_cache(cache, _config(), fraction=1.0)
    assert result.ok and result.checked == 12 and result.exact == 12 and result.exact_fraction == 1
    assert result.atol == 0.0 and result.device == "cpu"
    recorded = json.loads(Path(result.record_path).read_text())
    assert recorded["result"] == "pass" and sorted(recorded["sample_ids"]) == sorted(
        r["sample_id"] for r in CacheReader(cache).iter_records(["seed"]))
    assert recorded["teacher_fingerprint"] == CacheReader(cache).manifest.fingerprint_digest
    assert sorted(open_store(cache).list("manifests")) == manifests_before  # no generation
    assert list_generations(open_store(cache)) == [1] and verify_cache(cache, deep=True).ok


def test_audit_names_a_rewritten_tensor_that_checksums_cannot_see(cache, capsys):
    victim = _tamper_one_tensor(cache)
    assert verify_cache(cache, deep=True).ok  # consistent forgery: every checksum agrees
    result = audit_cache(cache, _config(), fraction=1.0)
    assert not result.ok and result.exact == 11
    assert [m.sample_id for m in result.mismatches] == [victim]
    assert list(result.mismatches[0].fields) == ["x0"]
    # the CLI: one MISMATCH line naming the sample, exit 2
    assert cli(["cache", "audit", cache, "--fraction", "1", "--teacher", "analytic", "--steps",
                "4", "--seed", "3", "--no-progress"]) == 2
    out = capsys.readouterr().out
    assert f"MISMATCH sample {victim}" in out and "x0: max |cached - regenerated|" in out
    assert "11 bit-exact (91.7%)" in out


def test_audit_cli_on_a_clean_cache_and_a_sample_of_ids(cache, tmp_path, capsys):
    assert cli(["cache", "audit", cache, "--fraction", "0.25", "--teacher", "analytic",
                "--steps", "4", "--seed", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "OK: 3 samples of generation 1 regenerated (bit-exact): 3 bit-exact (100.0%)" in out
    ids = [r["sample_id"] for r in CacheReader(cache).iter_records(["seed"])][:2]
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    assert audit_cache(cache, _config(), ids=ids).exact == 2
    assert cli(["cache", "audit", cache, "--ids", str(tmp_path / "ids.txt"), "--teacher",
                "analytic", "--steps", "4", "--seed", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["exact_fraction"] == 1.0
    assert len(open_store(cache).list("audits")) == 3


def test_audit_refuses_another_teacher_or_unknown_ids(cache, capsys):
    with pytest.raises(FingerprintMismatch, match="global_seed: 3 -> 4"):
        audit_cache(cache, JobConfig(teacher=make_settings({"kind": "analytic", "steps": 4}),
                                     seed=4), fraction=1.0)
    assert cli(["cache", "audit", cache, "--fraction", "1", "--teacher", "analytic",
                "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the teacher and settings given are not the ones")
    assert "Traceback" not in err
    with pytest.raises(ValueError, match="not live samples"):
        audit_cache(cache, _config(), ids=["nope"])


def test_audit_rebuilds_the_teacher_from_the_recorded_config_and_flags_override(tmp_path, capsys):
    """Issue 28: a cache that records its job config is audited without repeating the job's
    settings; flags override it, and one that changes the fingerprint is still refused."""
    url = str(tmp_path / "c")
    make_analytic_cache(url, _config(), record_config=True)
    assert CacheReader(url).manifest.extra["config"]["seed"] == 3
    result = audit_cache(url, fraction=1.0)
    assert result.ok and result.exact == 12
    assert cli(["cache", "audit", url, "--fraction", "0.25", "--no-progress"]) == 0
    assert "OK: 3 samples of generation 1 regenerated (bit-exact)" in capsys.readouterr().out
    assert cli(["cache", "audit", url, "--fraction", "0.25", "--device", "cpu",
                "--no-progress"]) == 0  # a flag that keeps the fingerprint
    capsys.readouterr()
    for flags, change in ((["--seed", "4"], "global_seed: 3 -> 4"),
                          (["--steps", "6"], "steps"), (["--teacher", "wan-tiny"], "teacher")):
        assert cli(["cache", "audit", url, "--fraction", "1", *flags, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: the flags given change the teacher this cache was made "
                              "with"), err
        assert change in err and "Traceback" not in err
    with pytest.raises(FingerprintMismatch, match="global_seed: 3 -> 4"):
        audit_cache(url, settings={"seed": 4}, fraction=1.0)
    assert len(open_store(url).list("audits")) == 3


def test_a_refused_audit_prints_its_error_line_and_no_progress_bar(cache, capsys):
    """Issue 29: the bar ('audit: 0 samples') was drawn before the teacher was checked, so a
    refusal printed it above its error line; now it appears once regeneration starts."""
    assert cli(["cache", "audit", cache, "--fraction", "1", "--teacher", "analytic"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the teacher and settings given are not the ones"), err
    assert "audit:" not in err and "sample/s" not in err
    assert cli(["cache", "audit", cache, "--fraction", "0.25", "--teacher", "analytic", "--steps",
                "4", "--seed", "3"]) == 0
    assert "audit: " in capsys.readouterr().err  # an audit that runs still shows its bar
