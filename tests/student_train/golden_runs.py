"""Tiny fixed training runs whose exact results are pinned (test_train_golden.py).

Only the public entry points are used (Trainer, TrainConfig, ARTrainer, ARConfig, make_cache),
so the same file runs on an export of an older commit to record what it trained:

    git archive <commit> | tar -x -C /tmp/head && cp tests/student_train/golden_runs.py \
        tests/student_train/cache_factory.py /tmp/head/tests/student_train/ && \
        cd /tmp/head && OMP_NUM_THREADS=1 /work/main/.venv/bin/python \
        tests/student_train/golden_runs.py /tmp/golden_out

prints the digests of the cache records and of every tensor group of the final checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # cache_factory, when run as a script
from cache_factory import make_cache

KD_STEPS = 30


def kd_config(**kw):
    from student_train.config import TrainConfig

    return TrainConfig(**{"steps": KD_STEPS, "batch_size": 8, "warmup_steps": 5,
                          "checkpoint_every": 10, "log_every": 5, "kd_fraction": 0.5,
                          "model": {"dim": 24, "heads": 2}, **kw})


def ar_config(**kw):
    from student_train.self_forcing import ARConfig

    return ARConfig(**{"causal_steps": 3, "steps": 3, "batch_size": 4, "warmup_steps": 1,
                       "checkpoint_every": 2, "log_every": 1, "critic_steps": 1, "lr": 1e-3,
                       "critic_lr": 1e-3, "causal_lr": 1e-3, "dmd_sigma_shift": 5.0, **kw})


def tensor_digests(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """sha256 per tensor group (the name before the first dot: model, ema, optim, critic, ...)
    over the group's tensors in name order: name, dtype, shape and bytes."""
    groups: dict[str, hashlib._Hash] = {}
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h = groups.setdefault(name.split(".", 1)[0], hashlib.sha256())
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return {k: h.hexdigest() for k, h in groups.items()}


def checkpoint_digests(checkpoint_url: str) -> dict[str, str]:
    from student_train.checkpoint import load_checkpoint

    tensors, _ = load_checkpoint(checkpoint_url)
    return tensor_digests(tensors)


def cache_digest(cache_url: str) -> str:
    """sha256 over every record of the cache in index order (ids, field names, array bytes)."""
    from cache_schema import CacheReader

    h = hashlib.sha256()
    for record in CacheReader(cache_url).iter_records():
        for key in sorted(record):
            value = record[key]
            h.update(key.encode())
            h.update(value.tobytes() if hasattr(value, "tobytes") else str(value).encode())
    return h.hexdigest()


def run_kd(cache: str, out: Path, *, stop_after: int | None = None) -> str:
    from student_train.trainer import Trainer

    last = Trainer(cache, str(out), kd_config()).run(progress=False, stop_after=stop_after)
    if stop_after is not None:  # "killed": a new process resumes from the newest checkpoint
        last = Trainer(cache, str(out), kd_config()).run(progress=False)
    return last


def run_stage2(kd_checkpoint: str, cache: str, out: Path, *, stop_after: int | None = None) -> str:
    from student_train.self_forcing import ARTrainer

    last = ARTrainer(kd_checkpoint, cache, str(out), ar_config()).run(progress=False,
                                                                      stop_after=stop_after)
    if stop_after is not None:
        last = ARTrainer(kd_checkpoint, cache, str(out), ar_config()).run(progress=False)
    return last


def main(root: Path) -> dict:
    torch.set_num_threads(1)
    cache = make_cache(root / "cache", seeds=2)
    kd = run_kd(cache, root / "kd")
    ar = run_stage2(kd, cache, root / "ar")
    return {"cache": cache_digest(cache), "kd": checkpoint_digests(kd),
            "stage2": checkpoint_digests(ar), "kd_checkpoint": kd.rsplit("/", 1)[-1],
            "stage2_checkpoint": ar.rsplit("/", 1)[-1]}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1])), indent=1))
