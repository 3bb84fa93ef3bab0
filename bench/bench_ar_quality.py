"""Quality of S2DiT-AR (self-forcing, DESIGN 6 stage 2) against S2DiT-KD and the analytic teacher.

Starts from an S2DiT-KD checkpoint and its cache (``--kd`` and ``--cache``), or builds both at a
small scale the way bench/bench_kd_quality.py does, trains S2DiT-AR on 2 CPU cores, and scores
on the same held-out seeds of the trained classes:
  - S2DiT-KD sampled in streaming causal mode (chunk by chunk, clean context) before self-forcing,
  - S2DiT-AR after, in the same streaming mode,
  - S2DiT-KD bidirectional 4-step, the teacher's 4-step and full-step Euler.

    .venv/bin/python bench/bench_ar_quality.py --kd /tmp/bench_kd9/run --cache /tmp/bench_kd9/cache \\
        --out /tmp/bench_ar
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROWS = (  # (report set key, label)
    ("kd:student_4step_streaming", "S2DiT-KD, 4 steps, streaming causal (before self-forcing)"),
    ("ar:student_ar_4step_streaming", "S2DiT-AR, 4 steps, streaming causal (after)"),
    ("ar:student_4step", "S2DiT-AR, 4 steps, bidirectional (not its mode)"),
    ("kd:student_4step", "S2DiT-KD, 4 steps, bidirectional"),
    ("kd:teacher_4step", "teacher, 4-step Euler"),
    ("kd:teacher_fullstep", "teacher, full-step Euler"),
)


def build_kd(out: Path, classes: int, per_class: int, kd_steps: int) -> tuple[str, str]:
    """A small cache and KD run (the KD bench's recipe, fewer trajectories and steps)."""
    from student_train.config import TrainConfig
    from student_train.trainer import Trainer
    from teacher_jobs.analytic_corpus import split_classes, write_corpus
    from teacher_jobs.config import JobConfig
    from teacher_jobs.job import run_generation

    train, _ = split_classes(train_classes=classes)
    corpus = write_corpus(str(out / "prompts.txt"), train)
    run_generation(JobConfig(prompts=corpus, output=str(out / "cache"), seeds_per_prompt=per_class,
                             samples_per_shard=256, num_actors=2, commit_every=1000))
    config = TrainConfig.load(str(ROOT / "configs" / "kd_demo.toml"), steps=kd_steps)
    config.checkpoint_every = config.steps
    Trainer(str(out / "cache"), str(out / "kd"), config).run()
    return str(out / "kd"), str(out / "cache")


def table(kd_report: dict, ar_report: dict, set_name: str) -> list[str]:
    lines = ["| sampler | adherence | coverage | dispersion ratio | NLL/dim |", "|---|---|---|---|---|"]
    for key, label in ROWS:
        which, name = key.split(":")
        s = (kd_report if which == "kd" else ar_report)[set_name].get(name)
        if s:
            lines.append(f"| {label} | {s['adherence']:.3f} | {s['coverage']:.3f} | "
                         f"{s['dispersion_ratio']:.3f} | {s['nll_per_dim']:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench_ar", help="output folder")
    parser.add_argument("--kd", help="S2DiT-KD checkpoint or KD output URL (default: build one)")
    parser.add_argument("--cache", help="the KD run's cache (required with --kd)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "ar_demo.toml"),
                        help="stage-2 config (default: configs/ar_demo.toml); flags below override it")
    parser.add_argument("--steps", type=int, help="generator steps")
    parser.add_argument("--batch", type=int, help="rollouts per generator step")
    parser.add_argument("--classes", type=int, default=12, help="trained classes when building KD")
    parser.add_argument("--per-class", type=int, default=400, help="cached trajectories per class when building KD")
    parser.add_argument("--kd-steps", type=int, default=800, help="KD steps when building KD")
    parser.add_argument("--eval-per-class", type=int, default=32, help="held-out samples per class")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import torch

    from pipeline.eval import evaluate_checkpoint
    from student_train.checkpoint import latest_checkpoint
    from student_train.self_forcing import ARConfig, ARTrainer

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.kd:
        if not args.cache:
            parser.error("--kd needs --cache (the cache it was trained on)")
        kd, cache = args.kd, args.cache
    else:
        kd, cache = build_kd(out, args.classes, args.per_class, args.kd_steps)
    kd = latest_checkpoint(kd) or kd
    config = ARConfig.load(args.config, steps=args.steps, batch_size=args.batch)
    config.checkpoint_every = min(config.checkpoint_every, config.steps)
    trainer = ARTrainer(kd, cache, str(out / "ar"), config)
    started_at = trainer.step
    checkpoint = trainer.run()
    train_seconds = trainer.train_seconds
    t0 = time.perf_counter()
    kd_report = evaluate_checkpoint(kd, per_class=args.eval_per_class, streaming=True)
    ar_report = evaluate_checkpoint(checkpoint, per_class=args.eval_per_class)
    eval_seconds = time.perf_counter() - t0
    report = {"kd_checkpoint": kd, "cache": cache, "ar_checkpoint": checkpoint, "kd": kd_report,
              "ar": ar_report, "train_seconds": train_seconds, "steps_run": config.steps - started_at,
              "eval_seconds": eval_seconds, "config": config.to_json(),
              "threads": torch.get_num_threads(), "params": trainer.model.num_params()}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    for set_name in ("held_out_seeds", "unseen_combinations"):
        if set_name in kd_report:
            print(f"\n{set_name} ({args.eval_per_class} per class, EMA weights):")
            print("\n".join(table(kd_report, ar_report, set_name)))
    print(f"\nS2DiT-AR: {config.steps - started_at} generator steps x {config.batch_size} rollouts "
          f"(critic steps {config.critic_steps}, chunk frames {trainer.model_config.chunk_frames}, "
          f"{trainer.model.num_params() / 1e6:.2f}M params) in {train_seconds:.0f} s "
          f"({train_seconds / max(1, config.steps - started_at):.2f} s/step); scoring {eval_seconds:.0f} s")


if __name__ == "__main__":
    main()
