"""Streaming loader order and resume, 2-in-1 training resume, refusals on bad caches."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from cache_factory import make_cache

from cache_schema import FingerprintMismatch, IntegrityError, load_manifest
from student_train.config import TrainConfig
from student_train.data import CacheStream, LoaderConfig
from student_train.trainer import Trainer


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return make_cache(tmp_path_factory.mktemp("kd") / "cache")


def _ids(stream, n):
    return [r["sample_id"] for r in itertools.islice(iter(stream), n)]


def test_order_is_a_function_of_seed_and_epoch(cache):
    total = load_manifest(cache).num_samples
    a = _ids(CacheStream(cache, fields=["seed"], config=LoaderConfig(seed=3)), 2 * total)
    b = _ids(CacheStream(cache, fields=["seed"], config=LoaderConfig(seed=3, prefetch_shards=5, read_workers=3)), 2 * total)
    c = _ids(CacheStream(cache, fields=["seed"], config=LoaderConfig(seed=4)), total)
    assert a == b and a[:total] != c
    assert sorted(a[:total]) == sorted(a[total:]) and len(set(a[:total])) == total  # epochs
    assert a[:total] != a[total:]  # reshuffled per epoch


def test_resume_at_several_points_gives_the_uninterrupted_order(cache):
    full = _ids(CacheStream(cache, fields=["seed"], config=LoaderConfig(seed=1)), 200)
    got, state = [], None
    for cut, prefetch in ((13, 1), (40, 3), (71, 2), (150, 4), (200, 1)):
        config = LoaderConfig(seed=1, prefetch_shards=prefetch, read_workers=prefetch)  # workers change
        stream = CacheStream(cache, fields=["seed"], config=config)
        if state:
            stream.load_state_dict(state)
        it = iter(stream)
        got += [next(it)["sample_id"] for _ in range(cut - len(got))]
        state = stream.state_dict()
    assert got == full


def test_next_epoch_is_read_ahead_before_the_current_one_ends(cache):
    """An epoch boundary is not a stall: the next epoch's first shards are read while the
    current epoch's last ones are consumed."""
    import time

    manifest = load_manifest(cache)
    stream = CacheStream(cache, fields=["seed"], config=LoaderConfig(seed=2, prefetch_shards=3))
    reads: list[int] = []
    read = stream._read
    stream._read = lambda shard_index: reads.append(shard_index) or read(shard_index)
    it = iter(stream)
    for _ in range(manifest.num_samples):  # exactly epoch 0
        next(it)
    deadline = time.monotonic() + 10
    while len(reads) <= len(manifest.shards) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.epoch == 0 and len(reads) > len(manifest.shards)
    first_of_next = stream.rank_order(1, 0)[0][0]
    assert reads[len(manifest.shards)] == first_of_next
    assert next(it)["sample_id"] and stream.epoch == 1
    it.close()


def test_two_ranks_see_disjoint_samples_covering_the_epoch(cache):
    total = load_manifest(cache).num_samples
    ranks = [set(_ids(CacheStream(cache, fields=["seed"], config=LoaderConfig(seed=0, rank=r, world_size=2)),
                      total // 2)) for r in (0, 1)]
    assert not ranks[0] & ranks[1]
    assert len(ranks[0] | ranks[1]) == total


def test_resume_with_a_different_world_size_misses_and_repeats_nothing(cache):
    total = load_manifest(cache).num_samples
    cut = 10  # samples each of 2 ranks read before the run is resized to 3 ranks
    two = [CacheStream(cache, fields=["seed"], config=LoaderConfig(seed=5, rank=r, world_size=2))
           for r in (0, 1)]
    seen = [sid for stream in two for sid in _ids(stream, cut)]
    state = two[0].state_dict()
    assert state["consumed"] == 2 * cut
    three = []
    for r in range(3):
        stream = CacheStream(cache, fields=["seed"], config=LoaderConfig(seed=5, rank=r, world_size=3))
        stream.load_state_dict(state)
        three.append(stream)
    rest = (total - 2 * cut) // 3
    seen += [sid for stream in three for sid in _ids(stream, rest)]
    assert len(seen) == len(set(seen)) == 2 * cut + 3 * rest >= total - 2


def test_tombstoned_samples_are_not_part_of_an_epoch(cache, tmp_path):
    import shutil

    import pyarrow as pa

    from cache_schema import open_store, read_manifest
    from cache_schema.index import STATUS_REMOVED, read_index
    from cache_schema.writer import commit_manifest

    url = str(tmp_path / "filtered")
    shutil.copytree(cache, url)
    store = open_store(url)
    parent = read_manifest(store, 1)
    table = read_index(store, parent.index_path)
    ids = table.column("sample_id").to_pylist()
    dropped = set(ids[::3])
    status = [STATUS_REMOVED if sid in dropped else st
              for sid, st in zip(ids, table.column("status").to_pylist())]
    table = table.set_column(table.schema.get_field_index("status"), "status", pa.array(status))
    commit_manifest(store, parent=parent, shards=parent.shards, index_table=table,
                    layout=parent.layout, fingerprint=parent.fingerprint,
                    encoding=parent.encoding, operation="filter")
    live = len(ids) - len(dropped)
    epoch = _ids(CacheStream(url, fields=["seed"], config=LoaderConfig(seed=2)), 2 * live)
    assert sorted(epoch[:live]) == sorted(set(ids) - dropped) == sorted(epoch[live:])
    assert len(_ids(CacheStream(f"{url}@1", fields=["seed"]), len(ids))) == len(ids)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"steps": 6, "batch_size": 8, "warmup_steps": 2, "checkpoint_every": 2,
                          "log_every": 1, "model": {"dim": 48, "heads": 4}, **kw})


def test_interrupted_and_resumed_run_ends_with_the_same_weights(cache, tmp_path):
    Trainer(cache, str(tmp_path / "a"), _cfg()).run(progress=False)
    Trainer(cache, str(tmp_path / "b"), _cfg()).run(progress=False, stop_after=3)  # "killed"
    resumed = Trainer(cache, str(tmp_path / "b"), _cfg())
    assert resumed.step == 2  # newest checkpoint before the interruption
    resumed.run(progress=False)
    a = Trainer(cache, str(tmp_path / "a"), _cfg()).model.state_dict()
    b = Trainer(cache, str(tmp_path / "b"), _cfg()).model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(v, torch.zeros_like(v)) for v in a.values())
    assert (tmp_path / "a" / "metrics.jsonl").read_text().count("\n") == 6


def test_wrong_fingerprint_or_schedule_is_refused(cache, tmp_path):
    with pytest.raises(FingerprintMismatch, match="expects"):
        Trainer(cache, str(tmp_path / "x"), _cfg(expect_fingerprint_digest="0" * 64))
    sparse = make_cache(tmp_path / "sparse", keep=(0, 3, 5), seeds=1)
    with pytest.raises(ValueError, match="needs solver steps"):
        Trainer(sparse, str(tmp_path / "y"), _cfg())


def test_corrupt_shard_stops_training_naming_it_or_is_skipped(tmp_path):
    cache = make_cache(tmp_path / "cache", seeds=1)
    shard = load_manifest(cache).shards[1]
    path = Path(cache) / shard.path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=shard.path.split("/")[-1]):
        Trainer(cache, str(tmp_path / "run"), _cfg(steps=4, batch_size=16)).run(progress=False)
    trainer = Trainer(cache, str(tmp_path / "run2"), _cfg(steps=4, batch_size=16, skip_corrupt_shards=True))
    trainer.run(progress=False)
    assert trainer.stream.skipped_shards and shard.path in trainer.stream.skipped_shards[0]


@pytest.mark.slow  # ~30 s: test_a_killed_ray_train_worker_... below trains the same two workers
# against one worker (and a restart on top), so the two-worker path stays in the default suite
def test_two_ray_train_workers_match_one_worker(cache, tmp_path, ray_runtime):
    from student_train.launch import launch

    cfg = _cfg(steps=3, batch_size=8, checkpoint_every=3)
    Trainer(cache, str(tmp_path / "one"), cfg).run(progress=False)
    launch("kd", cfg, 2, out_url=str(tmp_path / "two"), cache_url=cache, progress=False,
           storage_path=str(tmp_path / "ray_train"))
    one = Trainer(cache, str(tmp_path / "one"), cfg).model.state_dict()
    two = Trainer(cache, str(tmp_path / "two"), cfg).model.state_dict()
    for key in one:
        torch.testing.assert_close(one[key], two[key], rtol=1e-4, atol=1e-5)


def test_kd_fraction_loss_splits_over_ranks_like_one_worker(cache):
    from student_train.losses import distillation_loss
    from student_train.model import S2DiT
    from student_train.trainer import FIELDS, collate, make_plan, student_config_for

    reader = CacheStream(cache, fields=FIELDS).reader
    records = list(itertools.islice(reader.iter_records(fields=FIELDS), 16))
    for r in records:
        r["_epoch"] = 0
    plan = make_plan(reader.layout, records[0]["sigmas"], 4)
    torch.manual_seed(0)
    model = S2DiT(student_config_for(reader.layout, {"dim": 32, "heads": 2}))
    kw = {"schedule": plan.schedule, "adjacent": plan.adjacent, "contiguous": plan.contiguous,
          "kd_weight": 1.0, "step_weight": 1.0, "jitter": True, "kd_fraction": 0.5}

    def loss(rows, per_rank):
        batch = collate(rows, reader.layout.max_text_len, "cpu", seed=0)
        return distillation_loss(model, batch, rows_per_rank=per_rank, **kw)

    whole, parts = loss(records, 16)
    split = [loss(records[r::2], 8) for r in (0, 1)]
    assert 0 < parts["kd_loss"] and torch.allclose(whole, (split[0][0] + split[1][0]) / 2, rtol=1e-5)
    kept = collate(records, reader.layout.max_text_len, "cpu", seed=0).u[:, 3] < 0.5
    assert 0 < int(kept.sum()) < 16  # some trajectories give no KD row


def test_training_streams_from_s3_and_checkpoints_to_s3(s3_bucket, tmp_path):
    """The cache and the run both on object storage (loopback S3 through s3fs): killed, resumed
    from the S3 checkpoint, and equal to the same run on local folders."""
    remote_cache = make_cache(f"{s3_bucket}/cache")
    out = f"{s3_bucket}/run"
    Trainer(remote_cache, out, _cfg()).run(progress=False, stop_after=3)  # "killed"
    resumed = Trainer(remote_cache, out, _cfg())
    assert resumed.step == 2
    resumed.run(progress=False)
    local = Trainer(make_cache(tmp_path / "cache"), str(tmp_path / "run"), _cfg())
    local.run(progress=False)
    remote = Trainer(remote_cache, out, _cfg())
    assert remote.step == local.step == 6
    for key, value in local.model.state_dict().items():
        torch.testing.assert_close(value, remote.model.state_dict()[key], rtol=1e-5, atol=1e-6)


def test_order_does_not_depend_on_the_order_shards_were_committed_in(tmp_path):
    """Teacher actors finish units in any order, so manifests list shards in any order; the
    same samples must still give the same epochs (and so the same training run)."""
    from cache_factory import analytic_records

    from cache_schema import commit_generation, write_shard

    records, layout, fp = analytic_records(seeds=1)  # 12 records
    runs = []
    for name, order in (("a", [0, 1, 2, 3]), ("b", [3, 1, 0, 2])):
        url = str(tmp_path / name)
        shards = [write_shard(url, records[3 * i : 3 * i + 3], layout=layout, encoding="wds",
                              shard_name=f"unit{i:05d}") for i in range(4)]
        commit_generation(url, shards=[shards[i] for i in order[:2]], layout=layout,
                          fingerprint=fp)  # an intermediate generation
        commit_generation(url, shards=[shards[i] for i in order[2:]], layout=layout,
                          fingerprint=fp)
        runs.append(url)
    listed = [[s.name for s in load_manifest(url).shards] for url in runs]
    assert listed[0] != listed[1]  # the manifests really list them differently
    a, b = (_ids(CacheStream(url, fields=["seed"], config=LoaderConfig(seed=5)), 24) for url in runs)
    assert a == b
    # a loader state saved before shard_order existed resumes in its own (manifest) order
    stream = CacheStream(runs[1], fields=["seed"], config=LoaderConfig(seed=5))
    legacy = {k: v for k, v in stream.state_dict().items() if k != "shard_order"}
    stream.load_state_dict(legacy)
    assert [s.name for s in stream.shards] == listed[1]


def _kill_a_train_worker(started_after: float) -> int:
    """SIGKILL one live Ray Train worker process started after ``started_after`` (not one of
    an earlier run still exiting); returns its pid."""
    import os
    import signal

    import psutil

    for proc in psutil.process_iter(["pid", "cmdline", "create_time", "status"]):
        if "ray::RayTrainWorker" in " ".join(proc.info["cmdline"] or []) and \
                proc.info["create_time"] >= started_after and proc.info["status"] != "zombie":
            os.kill(proc.info["pid"], signal.SIGKILL)
            return proc.info["pid"]
    raise AssertionError("no Ray Train worker process of this run found")


def test_a_killed_ray_train_worker_is_replaced_and_the_run_ends_as_if_uninterrupted(
        cache, tmp_path, ray_runtime, monkeypatch):
    import json
    import threading
    import time

    from student_train.checkpoint import latest_checkpoint, load_checkpoint
    from student_train.launch import launch

    # Ray Train's controller looks at its workers every 2 s by default (start-up, the death,
    # the restart each wait for a look); Ray Train passes this on to its controller
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    cfg = _cfg(steps=12, batch_size=8, checkpoint_every=2, model={"dim": 32, "heads": 4})
    out = tmp_path / "two"
    done: dict = {}
    thread = threading.Thread(target=lambda: done.update(ckpt=launch(
        "kd", cfg, 2, out_url=str(out), cache_url=cache, max_failures=1, progress=False,
        storage_path=str(tmp_path / "ray_train")).checkpoint), daemon=True)
    started = time.time() - 1
    thread.start()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait for a published checkpoint mid-run
        latest = latest_checkpoint(str(out))
        if latest and 2 <= load_checkpoint(latest)[1]["step"] < 8:
            break
        time.sleep(0.02)
    else:
        raise AssertionError("no mid-run checkpoint appeared")
    _kill_a_train_worker(started)
    thread.join(timeout=300)
    assert not thread.is_alive() and done["ckpt"].endswith("step_000012")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    resumed = [r for r in rows if r.get("event") == "resumed"]
    assert len(resumed) == 1 and 2 <= resumed[0]["step"] < 12  # the group restarted mid-run
    assert [r["step"] for r in rows if "loss" in r][-1] == 12
    Trainer(cache, str(tmp_path / "one"), cfg).run(progress=False)
    one = Trainer(cache, str(tmp_path / "one"), cfg).model.state_dict()
    two = Trainer(cache, str(out), cfg).model.state_dict()
    for key in one:
        torch.testing.assert_close(one[key], two[key], rtol=1e-4, atol=1e-5)
