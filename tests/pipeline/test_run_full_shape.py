"""The cluster config's student stages at full shape on CPU, one optimiser step each, so a shape
or memory bug shows here before a GPU is paid for (slow).

A cache of two records at 16x21x36x64 (a 512x288 A14B cache; UMT5 text 4096-d, 8 stored
states of 40 steps: the shipped 832x480 cache, 16x21x60x104, would need ~15 GiB a sample here;
its shapes are checked on the meta device by test_cluster_shapes_meta.py) is written with cache_schema's
writer (random values, real shapes and dtypes). S2DiT-KD then S2DiT-AR (one causal step and one
DMD step) train on it with that file's [train] / [train_ar] recipes and model, batch 1, fp32 on
CPU (the GPU recipe autocasts to bf16: activations here are an upper bound). The peak resident
memory of each step over the process's memory before it (per sample: batch 1) is printed and
kept in RESULTS for BENCHMARKS."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Self

import numpy as np
import psutil
import pytest

from cache_schema import CacheLayout, CacheWriter, parse_keep_steps
from student_train.checkpoint import latest_checkpoint
from student_train.config import TrainConfig
from student_train.self_forcing import ARConfig, ARTrainer
from student_train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
GPU_CONFIG = str(ROOT / "configs/wan22_student_gpu.toml")
LATENT, TEXT_DIM, TEXT_LEN, STEPS, SHIFT = (16, 21, 36, 64), 4096, 512, 40, 12.0
CPU = {"steps": 1, "batch_size": 1, "device": "cpu", "checkpoint_every": 1, "log_every": 1,
       "loader_workers": 1, "buffer_shards": 1, "prefetch_shards": 1}


def _fp32(config):
    """The recipe without its bf16 autocast (an unset key cannot be passed as an override)."""
    return dataclasses.replace(config, autocast_dtype=None)


class PeakRSS:
    """The largest resident set size seen while the block runs (sampled every 5 ms)."""

    def __enter__(self) -> Self:
        self.process, self.before = psutil.Process(), psutil.Process().memory_info().rss
        self.peak, self._stop = self.before, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self.started = time.perf_counter()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.started
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def step_gib(self) -> float:
        return (self.peak - self.before) / 2**30


def _write_full_shape_cache(url: str) -> None:
    keep = parse_keep_steps("uniform:8", STEPS)
    layout = CacheLayout(latent_shape=LATENT, num_steps=STEPS, keep_steps=keep, text_dim=TEXT_DIM,
                         max_text_len=TEXT_LEN)
    t = 1.0 - np.arange(STEPS) / STEPS
    sigmas = (SHIFT * t / (1 + (SHIFT - 1) * t)).astype(np.float32)[list(keep)]  # Wan's shifted grid
    rng = np.random.default_rng(0)
    half = lambda *shape: rng.standard_normal(shape, dtype=np.float32).astype(np.float16)
    s = len(keep)
    with CacheWriter(url, layout=layout, fingerprint={"teacher": "synthetic-full-shape"},
                     samples_per_shard=1) as writer:
        for i in range(2):
            writer.write({
                "sample_id": f"{i:032x}", "prompt": f"full shape prompt {i}", "negative_prompt": "",
                "seed": i, "noise": half(*LATENT), "states": half(s, *LATENT), "sigmas": sigmas,
                "timesteps": sigmas * 1000, "v_cond": half(s, *LATENT), "v_uncond": half(s, *LATENT),
                "guidance": np.full(s, 4.0, np.float32),
                "expert": (sigmas < 0.875).astype(np.uint8), "x0": half(*LATENT),
                "text_emb": half(48, TEXT_DIM)})


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_cluster_student_stages_take_one_step_each_at_full_shape_on_cpu(tmp_path):
    cache = str(tmp_path / "cache")
    _write_full_shape_cache(cache)
    kd_config = _fp32(TrainConfig.load(GPU_CONFIG, **CPU))
    assert kd_config.model["dim"] == 384 and kd_config.autocast_dtype is None  # its model, in fp32
    trainer = Trainer(cache, str(tmp_path / "kd"), kd_config)
    assert trainer.model_config.latent_frames == LATENT[1]
    with PeakRSS() as kd:
        trainer.run(progress=False)
    assert trainer.step == 1 and latest_checkpoint(str(tmp_path / "kd"))
    del trainer

    ar_config = _fp32(ARConfig.load(GPU_CONFIG, **{**CPU, "causal_steps": 1}))
    ar = ARTrainer(str(tmp_path / "kd"), cache, str(tmp_path / "ar"), ar_config)
    assert ar.num_chunks == LATENT[1] // 3  # 7 streaming chunks of 3 latent frames
    with PeakRSS() as dmd:
        ar.run(progress=False)
    assert (ar.causal_step, ar.step) == (1, 1) and latest_checkpoint(str(tmp_path / "ar"))
    RESULTS.update(kd_step_gib=round(kd.step_gib, 2), kd_seconds=round(kd.seconds, 1),
                   ar_causal_plus_dmd_step_gib=round(dmd.step_gib, 2), ar_seconds=round(dmd.seconds, 1),
                   process_peak_gib=round(max(kd.peak, dmd.peak) / 2**30, 2))
    print("full-shape one-step peak memory per sample (fp32, CPU):", RESULTS)
    assert kd.step_gib > 0 and dmd.step_gib > 0


RESULTS: dict[str, float] = {}
