"""The end-to-end stage graph behind `s2dit demo`.

1. corpus   INPUT demo config            OUTPUT prompts.txt (trained classes; others held out)
2. generate INPUT corpus, teacher config OUTPUT versioned cache (Ray teacher actors)
3. verify   INPUT cache                  OUTPUT deep integrity report (must pass)
4. version  INPUT cache                  OUTPUT tag ``train`` on the verified generation, lineage
5. train    INPUT cache@train            OUTPUT S2DiT-KD checkpoints + metrics (stage 1)
6. evaluate INPUT KD checkpoint          OUTPUT analytic-oracle scores vs the teacher
7. self-force INPUT KD checkpoint, cache OUTPUT S2DiT-AR checkpoints + metrics (stage 2: a
            causal phase of teacher forcing on the cache, then DMD self-forcing)
8. evaluate INPUT AR checkpoint          OUTPUT streaming (chunk-by-chunk) scores
9. sample   INPUT AR (else KD) checkpoint OUTPUT text to video: preview.mp4 per prompt, .png, .json
10. report  INPUT all of the above       OUTPUT report.json in the run folder
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
from rich.console import Console

from cache_schema import verify_cache
from cache_schema.versioning import lineage, set_tag
from pipeline.eval import evaluate_checkpoint, format_report
from pipeline.text_to_video import SampleConfig, generate
from student_train.config import TrainConfig
from student_train.self_forcing import ARConfig, ARTrainer
from student_train.trainer import Trainer
from teacher_jobs.analytic_corpus import split_classes, write_corpus
from teacher_jobs.config import JobConfig
from teacher_jobs.job import run_generation

# The training recipes of configs/kd_demo.toml (the issue-7 quality gate, BENCHMARKS.md) and
# configs/ar_demo.toml, embedded so the demo runs without the repository's files; a test keeps
# them equal to the files. Steps and batch sizes come from DemoConfig.
DEMO_KD_RECIPE: dict[str, Any] = {
    "lr": 1e-3, "warmup_steps": 50, "ema_decay": 0.995, "kd_weight": 1.0, "kd_fraction": 0.5,
    "step_weight": 1.0, "student_steps": 4, "sigma_jitter": True,
    "model": {"dim": 96, "heads": 4, "layout": ["lcha", "ssa:2", "ssa:2", "lcha"]},
}
DEMO_AR_RECIPE: dict[str, Any] = {
    "lr": 1e-4, "betas": (0.0, 0.99), "warmup_steps": 20, "ema_decay": 0.99, "critic_lr": 2e-4,
    "critic_steps": 1, "critic_warmup_steps": 0, "dmd_weight": 1.0, "regression_weight": 1.0,
    "dmd_sigma_min": 0.02, "dmd_sigma_max": 0.98, "dmd_sigma_shift": 5.0,
    "causal_steps": 200, "causal_lr": 3e-4, "causal_betas": (0.9, 0.99),
    "causal_jump_fraction": 0.5, "causal_jump_first_chunk": False, "causal_sigma_shift": 3.0,
    "context_sigma": 0.0, "exit_per_chunk": False,
}


@dataclass(kw_only=True, slots=True)
class DemoConfig:
    out: str = "runs/demo"
    train_classes: int = 12
    per_class: int = 500  # cached trajectories per trained class
    encoding: str = "wds"
    num_actors: int = 2
    train_steps: int = 2000
    batch_size: int = 64
    ar_steps: int = 200  # stage-2 self-forcing (DMD) steps (0 skips stage 2)
    ar_causal_steps: int = DEMO_AR_RECIPE["causal_steps"]  # stage-2 causal phase, before DMD
    ar_batch_size: int = 32
    eval_per_class: int = 24
    seed: int = 0


@contextlib.contextmanager
def _stage(console: Console, title: str, timings: dict[str, float], key: str) -> Iterator[None]:
    """A titled stage whose wall time goes into ``timings[key]``."""
    console.rule(title)
    started = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - started


def run_demo(cfg: DemoConfig, console: Console | None = None) -> dict[str, Any]:
    console = console or Console()
    fs, root = fsspec.core.url_to_fs(cfg.out)
    fs.makedirs(root, exist_ok=True)
    out = cfg.out.rstrip("/")
    timings: dict[str, float] = {}

    console.rule("1. corpus")
    train, unseen = split_classes(train_classes=cfg.train_classes, seed=cfg.seed)
    corpus = write_corpus(f"{out}/prompts.txt", train)
    console.print(f"{len(train)} trained classes x {cfg.per_class} seeds; {len(unseen)} combinations held out")

    with _stage(console, "2. generate the teacher cache (Ray)", timings, "generate_s"):
        job = run_generation(JobConfig(prompts=corpus, output=f"{out}/cache", encoding=cfg.encoding,
                                       seeds_per_prompt=cfg.per_class, samples_per_shard=256,
                                       num_actors=cfg.num_actors, seed=cfg.seed, commit_every=8))
    if not job.ok:
        raise RuntimeError(f"cache generation failed for units {job.failed_units}")
    manifest = job.manifest
    console.print(f"cache {out}/cache generation {manifest.generation}: {manifest.num_samples} "
                  f"trajectories, {manifest.total_bytes / 2**20:.0f} MiB in {len(manifest.shards)} shards")

    with _stage(console, "3. verify", timings, "verify_s"):
        report = verify_cache(f"{out}/cache@{manifest.generation}", deep=True)
    if not report.ok:
        raise RuntimeError(f"cache failed verification: {report.problems}")
    console.print(f"intact: {report.checked_shards} shards, {report.checked_samples} samples checksummed")

    console.rule("4. version")
    # Training names a tag, not "newest": later appends or filters cannot change what it reads.
    set_tag(f"{out}/cache", "train", manifest.generation)
    for row in lineage(f"{out}/cache")[:3]:
        console.print(f"generation {row['generation']}: {row['operation']}, {row['samples']} samples")
    console.print(f"tag train -> generation {manifest.generation}; training reads {out}/cache@train")

    with _stage(console, "5. train S2DiT-KD", timings, "train_s"):
        trainer = Trainer(f"{out}/cache@train", f"{out}/student",
                          TrainConfig(**DEMO_KD_RECIPE, steps=cfg.train_steps, batch_size=cfg.batch_size,
                                      seed=cfg.seed, checkpoint_every=max(1, cfg.train_steps // 4)))
        checkpoint = trainer.run()

    with _stage(console, "6. evaluate with the analytic oracle", timings, "evaluate_s"):
        scores = evaluate_checkpoint(checkpoint, per_class=cfg.eval_per_class, seed=cfg.seed)
    console.print(format_report(scores), soft_wrap=True)

    ar_checkpoint, ar_scores = None, None
    if cfg.ar_steps:
        with _stage(console, "7. self-force S2DiT-AR (stage 2)", timings, "train_ar_s"):
            recipe = {**DEMO_AR_RECIPE, "causal_steps": cfg.ar_causal_steps}
            ar_trainer = ARTrainer(checkpoint, f"{out}/cache@train", f"{out}/student_ar",
                                   ARConfig(**recipe, steps=cfg.ar_steps, batch_size=cfg.ar_batch_size,
                                            seed=cfg.seed,
                                            checkpoint_every=cfg.ar_steps + cfg.ar_causal_steps))
            ar_checkpoint = ar_trainer.run()
        timings["train_ar_causal_s"] = ar_trainer.phase_seconds["causal"]
        timings["train_ar_dmd_s"] = ar_trainer.phase_seconds["dmd"]
        console.print(f"causal phase {ar_trainer.causal_step} steps in "
                      f"{timings['train_ar_causal_s']:.0f} s, DMD {ar_trainer.step} steps in "
                      f"{timings['train_ar_dmd_s']:.0f} s (recipe: {recipe})")

        with _stage(console, "8. evaluate S2DiT-AR chunk by chunk", timings, "evaluate_ar_s"):
            ar_scores = evaluate_checkpoint(ar_checkpoint, per_class=cfg.eval_per_class, seed=cfg.seed)
        console.print(format_report(ar_scores), soft_wrap=True)

    with _stage(console, "9. text to video (the deployed path)", timings, "sample_s"):
        # S2DiT-AR generating chunk by chunk (else S2DiT-KD), through `s2dit sample`'s code.
        prompts = train[:4]
        preview = generate(SampleConfig(checkpoint=ar_checkpoint or checkpoint, prompts=prompts,
                                        out=f"{out}/preview", seed=cfg.seed))
    console.print(f"{len(prompts)} prompts -> {', '.join(preview['outputs']['videos'])}; "
                  f"scores {preview['scores']}")

    console.rule("10. report")
    result = {"config": dataclasses.asdict(cfg), "cache": f"{out}/cache@{manifest.generation}",
              "cache_tag": "train",
              "checkpoint": checkpoint, "timings": timings, "scores": scores,
              "ar_checkpoint": ar_checkpoint, "ar_scores": ar_scores,
              "preview": preview["outputs"], "preview_prompts": prompts}
    with fsspec.open(f"{out}/report.json", "w") as handle:
        json.dump(result, handle, indent=1)
    console.print(f"report: {out}/report.json; samples: {out}/preview.json")
    console.print({k: round(v, 1) for k, v in timings.items()})
    return result
