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


class AnalyticRealScore:
    """The exact analytic velocity (DESIGN 4.3) as DMD's real score, for diagnosis: separates
    an error of the KD model from DMD's own mode seeking. CFG v_u + g (v_c - v_u) over the
    prompt's class modes (v_c) and all classes' modes (v_u), per row at its own sigma."""

    name = "analytic"

    def __init__(self, teacher, guidance: float):
        import numpy as np

        self.teacher, self.guidance, self.np = teacher, guidance, np

    def __call__(self, x_t, sigma, batch):
        import torch

        np, t = self.np, self.teacher
        flat = x_t.detach().cpu().double().numpy().reshape(x_t.shape[0], -1)
        classes = np.array([t.class_of(p) for p in batch.prompts])
        all_modes = t.means.reshape(1, -1, flat.shape[1])
        out = np.empty_like(flat)
        for i, s in enumerate(sigma.tolist()):  # one sigma per row
            v_c = t.exact_velocity(flat[i : i + 1], s, t.means[classes[i : i + 1]])
            v_u = t.exact_velocity(flat[i : i + 1], s, all_modes)
            out[i] = (v_u + self.guidance * (v_c - v_u))[0]
        return torch.from_numpy(out.reshape(x_t.shape)).to(x_t.device, x_t.dtype)


def long_video(checkpoint: str, per_class: int, factor: int) -> dict:
    """Stream ``factor`` x the trained length chunk by chunk with a bounded SSA window (the
    trained length), timing each chunk, and score the first trained-length frames: the
    analytic teacher's latent frames are fixed by the cache's frame count."""
    import torch

    from cache_schema import load_manifest
    from pipeline.eval import analytic_teacher_of, load_student, trained_context_sigma
    from student_train.sampler import stream_chunks

    model, state = load_student(checkpoint)
    cfg = model.config
    window = cfg.latent_frames // cfg.chunk_frames  # chunks: the trained clip's context
    model_w = type(model)(cfg.replace(ssa_window=window))
    model_w.load_state_dict(model.state_dict())
    model_w.eval()
    manifest = load_manifest(f"{state['manifest']['cache_url'].split('@')[0]}@{state['manifest']['generation']}")
    teacher = analytic_teacher_of(manifest.fingerprint)
    prompts = [f"a {c} {o} moving {m}" for (o, c, m) in teacher.classes]
    trained = {teacher.class_of(p) for p in load_trained_prompts(state)}
    prompts = [p for p in prompts if teacher.class_of(p) in trained for _ in range(per_class)]
    c, f, h, w = teacher.latent_shape
    g = torch.Generator().manual_seed(2_000_000)  # held-out noise, never cached
    noise = torch.randn((len(prompts), c, factor * f, h, w), generator=g)
    text = teacher.encode_prompts(prompts)
    chunks, times = [], []
    t0 = time.perf_counter()
    for chunk in stream_chunks(model_w, noise, text.emb, text.mask, state["plan"]["schedule_sigmas"],
                               context_sigma=trained_context_sigma(state)):
        chunks.append(chunk)
        now = time.perf_counter()
        times.append(now - t0)
        print(f"  long video: chunk {len(chunks) - 1} in {now - t0:.3f} s")
        t0 = now
    x0 = torch.cat(chunks, dim=2)[:, :, :f]
    return {"factor": factor, "chunks": len(chunks), "chunk_s": times, "ssa_window": window,
            "first_trained_frames": teacher.score(x0.numpy(), prompts)}


def load_trained_prompts(state: dict) -> list[str]:
    from cache_schema import CacheReader

    return sorted(set(CacheReader(state["manifest"]["cache_url"]).index().column("prompt").to_pylist()))


def table(kd_report: dict, ar_report: dict, set_name: str) -> list[str]:
    lines = ["| sampler | adherence | coverage | dispersion ratio | NLL/dim |", "|---|---|---|---|---|"]
    for key, label in ROWS:
        which, name = key.split(":")
        s = (kd_report if which == "kd" else ar_report).get(set_name, {}).get(name)
        if s is None and which == "ar" and "streaming" in name:  # a causal-phase checkpoint
            s = ar_report.get(set_name, {}).get("student_4step_streaming")
        if s:
            lines.append(f"| {label} | {s['adherence']:.3f} | {s['coverage']:.3f} | "
                         f"{s['dispersion_ratio']:.3f} | {s['nll_per_dim']:.2f} |")
    return lines


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
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
    config = ARConfig.load(args.config, steps=args.steps, batch_size=args.batch, seed=args.seed,
                           causal_steps=args.causal_steps)
    config.checkpoint_every = min(config.checkpoint_every, config.steps + config.causal_steps)
    trainer = ARTrainer(kd, cache, str(out / "ar"), config, real_score=real_score_of(args, cache))
    started_at = trainer.step
    checkpoint = trainer.run()
    report = score(args, trainer, config, started_at, kd=kd, cache=cache, checkpoint=checkpoint)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print_summary(args, report, trainer, config, started_at)


def build_parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--noise", choices=("tune", "report"), default="tune",
                        help="held-out noise base: 'tune' for recipe decisions (default), 'report' "
                             "only for figures of a recipe already chosen")
    parser.add_argument("--seed", type=int, help="training seed (overrides the config's)")
    parser.add_argument("--causal-steps", type=int, help="causal-phase steps (overrides the config's)")
    parser.add_argument("--real-score", choices=("kd", "analytic"), default="kd",
                        help="DMD real score: the frozen KD model, or the exact analytic teacher")
    parser.add_argument("--real-guidance", type=float,
                        help="CFG scale of the analytic real score (default: the cache teacher's)")
    parser.add_argument("--long", type=int, default=0,
                        help="also stream a video this many times the trained length (e.g. 2)")
    parser.add_argument("--no-kd-eval", action="store_true",
                        help="skip scoring the KD model (rows already measured for this KD)")
    return parser


def real_score_of(args: argparse.Namespace, cache: str) -> AnalyticRealScore | None:
    """DMD's real score: None (the frozen KD model) or the exact analytic teacher's velocity."""
    if args.real_score != "analytic":
        return None
    from cache_schema import load_manifest
    from pipeline.eval import analytic_teacher_of

    teacher = analytic_teacher_of(load_manifest(cache).fingerprint)
    return AnalyticRealScore(teacher, args.real_guidance or teacher.guidance[0])


def score(args: argparse.Namespace, trainer, config, started_at: int, *, kd: str, cache: str,
          checkpoint: str) -> dict:
    """report.json: both models scored on the held-out sets, the long video, timings."""
    import torch

    from pipeline.eval import evaluate_checkpoint

    train_seconds = trainer.train_seconds
    t0 = time.perf_counter()
    kd_report = {} if args.no_kd_eval else evaluate_checkpoint(kd, per_class=args.eval_per_class,
                                                                 streaming=True, noise=args.noise)
    # streaming=True: a causal-phase-only checkpoint (stage "causal") is scored streaming too
    ar_report = evaluate_checkpoint(checkpoint, per_class=args.eval_per_class, streaming=True,
                                    noise=args.noise)
    eval_seconds = time.perf_counter() - t0
    long = long_video(checkpoint, args.eval_per_class, args.long) if args.long else None
    return {"kd_checkpoint": kd, "real_score": args.real_score, "noise": args.noise, "cache": cache, "ar_checkpoint": checkpoint, "kd": kd_report,
            "ar": ar_report, "train_seconds": train_seconds, "steps_run": config.steps - started_at,
            "eval_seconds": eval_seconds, "config": config.to_json(),
            "phase_seconds": trainer.phase_seconds, "long_video": long,
            "causal_steps_run": trainer.causal_step, "dmd_steps_run": trainer.step,
            "threads": torch.get_num_threads(), "params": trainer.model.num_params()}


def print_summary(args: argparse.Namespace, report: dict, trainer, config, started_at: int) -> None:
    kd_report, ar_report, long = report["kd"], report["ar"], report["long_video"]
    train_seconds, eval_seconds = report["train_seconds"], report["eval_seconds"]
    for set_name in ("held_out_seeds", "unseen_combinations"):
        if set_name in ar_report:
            print(f"\n{set_name} ({args.eval_per_class} per class, EMA weights):")
            print("\n".join(table(kd_report, ar_report, set_name)))
    if long:
        sc = long["first_trained_frames"]
        print(f"\nlong video x{long['factor']}: per-chunk s {[round(t, 3) for t in long['chunk_s']]}; "
              f"first trained frames adherence {sc['adherence']:.3f} coverage {sc['coverage']:.3f} "
              f"dispersion {sc['dispersion_ratio']:.3f}")
    print(f"\nphases (s): {trainer.phase_seconds}; causal steps {trainer.causal_step}, DMD steps {trainer.step}")
    print(f"\nS2DiT-AR: {config.steps - started_at} generator steps x {config.batch_size} rollouts "
          f"(critic steps {config.critic_steps}, chunk frames {trainer.model_config.chunk_frames}, "
          f"{trainer.model.num_params() / 1e6:.2f}M params) in {train_seconds:.0f} s "
          f"({train_seconds / max(1, config.steps - started_at):.2f} s/step); scoring {eval_seconds:.0f} s")


if __name__ == "__main__":
    main()
