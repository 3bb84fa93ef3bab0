"""Quality of S2DiT-KD against the analytic teacher at demo scale (DESIGN 6, issue 7 gate).

Generates an analytic cache with the Ray job, trains S2DiT-KD for a fixed number of steps on
2 CPU cores, and scores 4-step and full-step-on-grid samples on held-out seeds of the trained
classes (and, apart, unseen attribute combinations), next to the teacher's own 4-step and
full-step Euler on the same noise.

    .venv/bin/python bench/bench_kd_quality.py --out runs/bench_kd
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from cache_schema import load_manifest
from pipeline.eval import evaluate_checkpoint, format_report
from student_train.config import TrainConfig
from student_train.trainer import Trainer
from teacher_jobs.analytic_corpus import split_classes, write_corpus
from teacher_jobs.config import JobConfig
from teacher_jobs.job import run_generation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench_kd", help="output folder")
    parser.add_argument("--classes", type=int, default=12, help="trained classes (of 18)")
    parser.add_argument("--per-class", type=int, default=1334, help="cached trajectories per class")
    parser.add_argument("--config", default=str(Path(__file__).resolve().parent.parent / "configs" / "kd_demo.toml"),
                        help="training config (default: configs/kd_demo.toml); flags below override it")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps")
    parser.add_argument("--batch", type=int, default=None, help="trajectories per step")
    parser.add_argument("--dim", type=int, default=None, help="student width")
    parser.add_argument("--kd-fraction", type=float, default=None, help="share of trajectories giving a KD row")
    parser.add_argument("--eval-per-class", type=int, default=32, help="held-out samples per class")
    parser.add_argument("--cache", help="train on this cache URL (e.g. a demo run's cache@train) "
                                        "instead of generating one: one cache serves many recipes")
    parser.add_argument("--seed", type=int, default=None, help="training seed")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
    parser.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up steps")
    parser.add_argument("--min-lr-ratio", type=float, default=None, help="cosine floor, as a share of lr")
    parser.add_argument("--ema-decay", type=float, default=None, help="EMA decay of the scored weights")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.cache:
        cache, manifest = args.cache, load_manifest(args.cache)
    else:
        train, _unseen = split_classes(train_classes=args.classes)
        corpus = write_corpus(str(out / "prompts.txt"), train)
        cache = str(out / "cache")
        manifest = run_generation(JobConfig(prompts=corpus, output=cache,
                                            seeds_per_prompt=args.per_class, samples_per_shard=256,
                                            num_actors=2, commit_every=1000)).manifest
    gen_seconds = time.perf_counter() - t0
    config = TrainConfig.load(args.config, steps=args.steps, batch_size=args.batch,
                              kd_fraction=args.kd_fraction, seed=args.seed, lr=args.lr,
                              warmup_steps=args.warmup_steps, min_lr_ratio=args.min_lr_ratio,
                              ema_decay=args.ema_decay)
    config.checkpoint_every = config.steps
    if args.dim:
        config.model = {**config.model, "dim": args.dim}
    trainer = Trainer(cache, str(out / "run"), config)
    checkpoint = trainer.run()
    t0 = time.perf_counter()
    report = evaluate_checkpoint(checkpoint, per_class=args.eval_per_class)
    report.update({"cache_samples": manifest.num_samples, "generate_seconds": gen_seconds,
                   "train_seconds": trainer.train_seconds, "train_config": config.to_json(),
                   "cache_bytes": manifest.total_bytes, "checkpoint": checkpoint,
                   "eval_seconds": time.perf_counter() - t0})
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(format_report(report))
    print(f"cache: {report['cache_samples']} trajectories, {report['cache_bytes'] / 2**30:.2f} GiB, "
          f"generated (or opened) in {gen_seconds:.0f} s; training {config.steps} steps x {config.batch_size} "
          f"(kd_fraction {config.kd_fraction}, dim {config.model.get('dim')}) in "
          f"{trainer.train_seconds:.0f} s")


if __name__ == "__main__":
    main()
