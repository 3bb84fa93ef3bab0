"""Can the demo's S2DiT-KD step run faster on this CPU without changing the recipe? (issue 16)

Times the same step of configs/kd_demo.toml (64 trajectories, dim 96, 80 tokens) three ways in
one run, each trainer from the same seed on the same small analytic cache:

- eager: the shipped trainer (float32, eager PyTorch);
- compile: the model wrapped in ``torch.compile`` (inductor's C++ kernels; the KD row count
  varies per step, so a second, dynamic-shape compile follows the first). Inductor's on-disk
  cache goes to a new folder (unless TORCHINDUCTOR_CACHE_DIR is set): the compile is timed cold;
- bf16: the shipped trainer under CPU autocast to bfloat16 (``autocast_dtype``).

Prints, per variant, the seconds of the first steps (compilation included) and the median
s/step after them, and each variant's median against eager's. The variants are stepped in
alternating rounds after their warm-up, so that a change of load hits all of them.

    .venv/bin/python bench/bench_step_backends.py [--steps 8] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

# a cold compile, as a fresh machine has it: inductor's on-disk cache in a new folder
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="bench_inductor_"))

import torch
from bench_train_step import ROOT, make_cache

from student_train.config import TrainConfig
from student_train.trainer import Trainer

WARMUP_STEPS = 3  # compile: the static graph, then the dynamic-shape one


def build(variant: str, cache: str, out: Path) -> Trainer:
    extra = {"autocast_dtype": "bfloat16"} if variant == "bf16" else {}
    config = TrainConfig.load(str(ROOT / "configs" / "kd_demo.toml"), steps=10**6,
                              checkpoint_every=10**6, checkpoint_every_s=0, log_every=10**6, **extra)
    wrap = torch.compile if variant == "compile" else None
    trainer = Trainer(cache, str(out / variant), config, wrap_model=wrap)
    trainer.bench_take = trainer.take_records()
    return trainer


def timed(trainer: Trainer, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.train_step(trainer.bench_take)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the variants")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--variants", nargs="+", default=["eager", "compile", "bf16"],
                        choices=["eager", "compile", "bf16"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at start; "
          f"{args.threads} torch thread(s); CPU capability {torch.backends.cpu.get_cpu_capability()}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_backends_"))
    cache = make_cache(tmp / "cache", classes=12, seeds=32)
    trainers = {v: build(v, cache, tmp) for v in args.variants}
    warm = {v: timed(t, WARMUP_STEPS) for v, t in trainers.items()}
    steady: dict[str, list[float]] = {v: [] for v in trainers}
    for _ in range(args.rounds):
        for v, t in trainers.items():
            steady[v] += timed(t, args.steps)
    base = statistics.median(steady["eager"]) if "eager" in steady else None
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    for v in trainers:
        med = statistics.median(steady[v])
        ratio = f", {med / base:.3f}x eager" if base else ""
        print(f"{v:8s} first {WARMUP_STEPS} steps {' / '.join(f'{s:.2f}' for s in warm[v])} s; "
              f"median {med:.4f} s/step over {len(steady[v])} steps{ratio}")


if __name__ == "__main__":
    main()
