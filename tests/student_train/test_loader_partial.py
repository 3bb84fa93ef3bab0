"""Partial reads in training (issue 18): the loader reads only the steps a record's rows use.

A stage-1 step on a Zarr cache reads the chosen (sample, step) chunks by range; every step the
rows use equals the full read's, the order is the same, the bytes moved are counted, and a run
trains to the same weights as the full-read loader (locally here; on loopback S3 for 50 steps
in the slow test)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from cache_factory import analytic_records

from cache_schema import CacheWriter
from student_train.config import TrainConfig
from student_train.data import CacheStream, LoaderConfig, stage1_selector
from student_train.trainer import FIELDS, Trainer, record_uniforms
from teacher_jobs.analytic_corpus import class_prompts
from teacher_jobs.sampler import cache_fingerprint, record_trajectories
from teacher_jobs.teachers import build_teacher

pytestmark = pytest.mark.usefixtures("one_thread")


def zarr_cache(url: str, *, seeds: int = 2, codec: str = "raw") -> str:
    records, layout, fp = analytic_records(seeds=seeds)
    layout = dataclasses.replace(layout, codec=codec)
    with CacheWriter(url, layout=layout, fingerprint=fp, encoding="zarr",
                     samples_per_shard=8) as writer:
        for record in records:
            writer.write(record)
    return url


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"steps": 3, "batch_size": 8, "warmup_steps": 2, "checkpoint_every": 100,
                          "log_every": 1, "model": {"dim": 48, "heads": 4}, **kw})


def _selector(stream: CacheStream, seed: int, kd_fraction: float = 1.0, student_steps: int = 4):
    layout = stream.reader.layout
    schedule = sorted({round(k * layout.num_steps / student_steps) for k in range(student_steps)})
    return stage1_selector(seed=seed, num_kept=layout.num_kept, schedule=schedule,
                           kd_fraction=kd_fraction, uniforms=record_uniforms)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return zarr_cache(str(tmp_path_factory.mktemp("partial") / "cache"))


@pytest.mark.parametrize("kd_fraction", [1.0, 0.5])
def test_partial_records_equal_the_full_ones_at_every_step_the_rows_use(cache, kd_fraction):
    full = CacheStream(cache, fields=FIELDS, config=LoaderConfig(seed=3))
    part = CacheStream(cache, fields=FIELDS, config=LoaderConfig(seed=3))
    select = _selector(part, 3, kd_fraction)
    part.select_steps(select)
    n = 2 * len(full.reader)  # two epochs
    skipped = 0
    for epoch_k, (a, b) in enumerate(zip(itertools.islice(iter(full), n), itertools.islice(iter(part), n))):
        assert a["sample_id"] == b["sample_id"]  # the same order
        used = select(epoch_k // len(full.reader), a["sample_id"])
        for name, positions in used.items():
            np.testing.assert_array_equal(a[name][list(positions)], b[name][list(positions)])
            others = [p for p in range(a[name].shape[0]) if p not in positions]
            assert not b[name][others].any()  # not read: zero
            skipped += len(others)
        for name in ("x0", "text_emb", "sigmas", "guidance"):
            np.testing.assert_array_equal(a[name], b[name])
    assert skipped > 0
    # the bytes moved are counted, and far fewer of them
    assert 0 < part.bytes_read < 0.6 * full.bytes_read
    assert part.metrics()["loader_bytes_per_sample"] == pytest.approx(part.bytes_read / n, rel=0.5)


def test_stage1_with_partial_reads_trains_the_same_weights(cache, tmp_path):
    full = Trainer(cache, str(tmp_path / "full"), _cfg())
    full.stream.select_steps(None)
    full.run(progress=False)
    part = Trainer(cache, str(tmp_path / "part"), _cfg())  # the trainer selects its steps
    assert part.stream.selector is not None
    part.run(progress=False)
    assert part.stream.bytes_read < 0.6 * full.stream.bytes_read
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, part.model.state_dict()[key]), key


def test_a_trajectory_coded_cache_trains_the_same_weights_as_raw(cache, tmp_path):
    coded = zarr_cache(str(tmp_path / "coded"), codec="trajectory")
    runs = []
    for url, name in ((cache, "raw"), (coded, "traj")):
        trainer = Trainer(url, str(tmp_path / name), _cfg(steps=3))
        trainer.stream.select_steps(_selector(trainer.stream, 0))  # ignored where it cannot apply
        trainer.run(progress=False)
        runs.append(trainer.model.state_dict())
    for key, value in runs[0].items():
        assert torch.equal(value, runs[1][key]), key


@pytest.mark.slow
def test_fifty_kd_steps_on_s3_move_the_used_share_of_the_bytes_with_the_same_weights(s3_bucket):
    """Issue 18's must-show: a 24-step Zarr cache on loopback S3; 50 stage-1 steps read by range
    move at most (steps used / steps stored) + 5% of the full-record read's bytes (the loader's
    byte counter), and train to the same weights."""
    steps = 24
    teacher = build_teacher("analytic", num_steps=steps)
    prompts = [p for p in class_prompts() for _ in range(2)]
    keep = tuple(range(steps))
    records, _ = record_trajectories(teacher, prompts, [i % 2 for i in range(len(prompts))],
                                     global_seed=0, keep_steps=keep)
    fp = cache_fingerprint(teacher, keep_steps=keep, global_seed=0, half_dtype="float16",
                           negative_prompt="")
    url = f"{s3_bucket}/cache24"
    with CacheWriter(url, layout=teacher.layout(keep), fingerprint=fp, encoding="zarr",
                     samples_per_shard=8) as writer:
        for record in records:
            writer.write(record)
    cfg = _cfg(steps=50, warmup_steps=5)
    full = Trainer(url, f"{s3_bucket}/full", cfg)
    full.stream.select_steps(None)  # today's loader: every step of every record
    full.run(progress=False)
    part = Trainer(url, f"{s3_bucket}/part", cfg)
    part.run(progress=False)
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, part.model.state_dict()[key]), key
    used = 3 / steps  # a record's rows use at most 3 stored steps (KD state, jump start and end)
    ratio = part.stream.bytes_read / full.stream.bytes_read
    print(f"bytes moved: partial {part.stream.bytes_read} / full {full.stream.bytes_read} = "
          f"{ratio:.3f} (bound {used + 0.05:.3f}); per sample {part.stream.bytes_per_sample:.0f} "
          f"vs {full.stream.bytes_per_sample:.0f}")
    assert ratio <= used + 0.05
