"""Issue 17: the loader and both trainers (a short S2DiT-KD run, then S2DiT-AR's causal phase and
DMD from it) reading an S3 cache through the fault proxy: every sample once per epoch, and the
same weights as the runs without faults (a lost, repeated or corrupt read would change them)."""

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
from student_train.self_forcing import ARConfig, ARTrainer
from student_train.trainer import Trainer

from .fault_proxy import Schedule

_spec = importlib.util.spec_from_file_location(
    "kd_cache_factory", Path(__file__).parents[1] / "student_train" / "cache_factory.py")
factory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(factory)


def _cfg() -> TrainConfig:
    return TrainConfig(steps=4, batch_size=8, warmup_steps=2, checkpoint_every=2, log_every=1,
                       model={"dim": 48, "heads": 4})


def _ar_cfg() -> ARConfig:
    return ARConfig(steps=2, causal_steps=2, batch_size=4, warmup_steps=1, checkpoint_every=2,
                    log_every=1, lr=1e-3, critic_lr=1e-3)


def _weights(trainer) -> dict[str, torch.Tensor]:
    names = ("model", "ema", "critic") if hasattr(trainer, "critic") else ("model", "ema")
    return {f"{n}.{k}": v for n in names for k, v in getattr(trainer, n).state_dict().items()}


@pytest.mark.slow
def test_loader_merge_and_training_through_faults(fault_proxy, s3_bucket, tmp_path, capsys):
    url = factory.make_cache(f"{s3_bucket}/kd")  # written without faults
    clean = Trainer(url, str(tmp_path / "clean"), _cfg())
    clean.run(progress=False)
    kd = str(tmp_path / "clean")
    clean_ar = ARTrainer(kd, url, str(tmp_path / "clean_ar"), _ar_cfg())
    clean_ar.run(progress=False)
    fault_proxy.set_schedule(Schedule(seed=5, rate=0.2, max_faults=60, duration=300,
                                      max_latency=0.1))
    total = load_manifest(url).num_samples
    epoch = [r["sample_id"] for r in itertools.islice(
        iter(CacheStream(url, fields=["seed"], config=LoaderConfig(seed=1))), total)]
    assert len(epoch) == len(set(epoch)) == total  # 0 lost, 0 duplicated
    faulty = Trainer(url, str(tmp_path / "faulty"), _cfg())
    faulty.run(progress=False)
    a, b = _weights(clean), _weights(faulty)
    assert all(torch.equal(a[k], b[k]) for k in a)  # 0 corrupt reads accepted
    kd_faults, kd_counts = fault_proxy.faults, dict(fault_proxy.counts)
    fault_proxy.set_schedule(Schedule(seed=6, rate=0.2, max_faults=40, duration=300,
                                      max_latency=0.1))
    faulty_ar = ARTrainer(kd, url, str(tmp_path / "faulty_ar"), _ar_cfg())
    faulty_ar.run(progress=False)
    assert (faulty_ar.causal_step, faulty_ar.step) == (2, 2)
    a, b = _weights(clean_ar), _weights(faulty_ar)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)  # stage 2 too
    assert verify_cache(url, deep=True).ok
    with capsys.disabled():
        print(f"\nfault proxy (loader + KD): {json.dumps(kd_counts, sort_keys=True)}; "
              f"(AR causal + DMD): {json.dumps(fault_proxy.counts, sort_keys=True)}")
    assert kd_faults > 0 and fault_proxy.faults > 0
