"""Issue 17: the loader and a short KD training run reading an S3 cache through the fault
proxy: every sample once per epoch, and the same weights as the run without faults (a lost,
repeated or corrupt read would change them)."""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path

import pytest
import torch

from cache_schema import load_manifest
from cache_schema.verify import verify_cache
from student_train.config import TrainConfig
from student_train.data import CacheStream, LoaderConfig
from student_train.trainer import Trainer

from .fault_proxy import Schedule

_spec = importlib.util.spec_from_file_location(
    "kd_cache_factory", Path(__file__).parents[1] / "student_train" / "cache_factory.py")
factory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(factory)


def _cfg() -> TrainConfig:
    return TrainConfig(steps=4, batch_size=8, warmup_steps=2, checkpoint_every=2, log_every=1,
                       model={"dim": 48, "heads": 4})


@pytest.mark.slow
def test_loader_merge_and_training_through_faults(fault_proxy, s3_bucket, tmp_path, capsys):
    url = factory.make_cache(f"{s3_bucket}/kd")  # written without faults
    clean = Trainer(url, str(tmp_path / "clean"), _cfg())
    clean.run(progress=False)
    fault_proxy.set_schedule(Schedule(seed=5, rate=0.2, max_faults=60, duration=300,
                                      max_latency=0.1))
    total = load_manifest(url).num_samples
    epoch = [r["sample_id"] for r in itertools.islice(
        iter(CacheStream(url, fields=["seed"], config=LoaderConfig(seed=1))), total)]
    assert len(epoch) == len(set(epoch)) == total  # 0 lost, 0 duplicated
    faulty = Trainer(url, str(tmp_path / "faulty"), _cfg())
    faulty.run(progress=False)
    a, b = clean.model.state_dict(), faulty.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # 0 corrupt reads accepted
    assert verify_cache(url, deep=True).ok
    with capsys.disabled():
        print(f"\nfault proxy (loader + training): {json.dumps(fault_proxy.counts, sort_keys=True)}")
    assert fault_proxy.faults > 0
