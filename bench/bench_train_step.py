"""Cost of one S2DiT-KD training step at the demo recipe (issue 16): where its time goes, and
this tree's step against the step before the overhead cuts, in one run (ratios; the machine's
load is printed with them).

The demo's KD stage is configs/kd_demo.toml: 64 trajectories per step (64 step rows + ~32 KD
rows), dim 96, 80 tokens of (4, 5, 8, 8) latents. The bench writes a small analytic cache of that
shape (no Ray), then:

1. breakdown: median ms of each part of a step (take records, collate, forward, backward,
   clip + AdamW, EMA) on this tree's code;
2. the fixed cost of a step: the same model at 2 trajectories per step (tensors 32x smaller),
   as a share of the demo step: an upper bound of what per-step overheads cost;
3. op categories (--profile): torch.profiler self-CPU time of a few steps grouped into matrix
   products, element-wise ops, copies/cat/fill, reductions, norms and the rest;
4. before / after: two trainers from the same seed, stepped in alternation (so load changes hit
   both). "before" is the step as it was: every stored (B, S, ...) trajectory widened to
   float32 in collate, and the per-parameter (single-tensor) AdamW loop. "after" is this
   tree's trainer (fp16 trajectories, the picked steps widened in the loss; foreach AdamW).
   Both end with the same weights, bit for bit (checked and printed).

    .venv/bin/python bench/bench_train_step.py [--threads 1 2] [--steps 4] [--rounds 3] [--profile]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

import student_train.trainer as kd_trainer
from cache_schema import CacheWriter
from student_train.config import TrainConfig
from student_train.losses import Batch, distillation_loss, kd_rows, step_rows
from student_train.optim import ema_update
from student_train.trainer import Trainer
from teacher_jobs.analytic_corpus import class_prompts
from teacher_jobs.sampler import cache_fingerprint, record_trajectories
from teacher_jobs.teachers import build_teacher

ROOT = Path(__file__).resolve().parent.parent
COLLATE = kd_trainer.collate  # this tree's


def make_cache(path: Path, classes: int, seeds: int) -> str:
    """Demo-shaped analytic cache: 24-step trajectories, every step kept, fp16, 64 per shard."""
    teacher = build_teacher("analytic")
    prompts = [p for p in class_prompts()[:classes] for _ in range(seeds)]
    keep = tuple(range(teacher.num_steps))
    records, _ = record_trajectories(teacher, prompts, [i % seeds for i in range(len(prompts))],
                                     global_seed=0, keep_steps=keep)
    fingerprint = cache_fingerprint(teacher, keep_steps=keep, global_seed=0, half_dtype="float16",
                                    negative_prompt="")
    with CacheWriter(str(path), layout=teacher.layout(keep), fingerprint=fingerprint,
                     samples_per_shard=64) as writer:
        for record in records:
            writer.write(record)
    return str(path)


def legacy_collate(records: list[dict], max_text_len: int, device, seed: int) -> Batch:
    """The collate before the overhead cuts: every stored step widened to float32."""
    batch = COLLATE(records, max_text_len, device, seed)
    return dataclasses.replace(batch, states=batch.states.float(), v_cond=batch.v_cond.float(),
                               v_uncond=batch.v_uncond.float())


def trainer(cache: str, out: Path, legacy: bool, batch_size: int | None = None) -> Trainer:
    config = TrainConfig.load(str(ROOT / "configs" / "kd_demo.toml"), steps=10**6,
                              checkpoint_every=10**6, checkpoint_every_s=0, log_every=10**6,
                              batch_size=batch_size)
    t = Trainer(cache, str(out), config)
    if legacy:
        t.opt = torch.optim.AdamW(t.model.parameters(), lr=config.lr, betas=config.betas,
                                  weight_decay=config.weight_decay, foreach=False)
    t.bench_take = t.take_records()
    return t


def timed_step(t: Trainer, legacy: bool) -> float:
    kd_trainer.collate = legacy_collate if legacy else COLLATE
    try:
        t0 = time.perf_counter()
        t.train_step(t.bench_take)
        return time.perf_counter() - t0
    finally:
        kd_trainer.collate = COLLATE


def breakdown(t: Trainer, steps: int) -> dict[str, float]:
    """Median ms of each part of this tree's step (the parts of Trainer.train_step, timed)."""
    cfg, plan, parts = t.cfg, t.plan, defaultdict(list)
    for _ in range(steps):
        marks = [time.perf_counter()]
        records = t.bench_take(cfg.batch_size)
        marks.append(time.perf_counter())
        batch = COLLATE(records, t.layout.max_text_len, t.device, cfg.seed)
        marks.append(time.perf_counter())
        loss, _ = distillation_loss(t.model, batch, schedule=plan.schedule, adjacent=plan.adjacent,
                                    contiguous=plan.contiguous, kd_weight=cfg.kd_weight,
                                    step_weight=cfg.step_weight, jitter=cfg.sigma_jitter,
                                    kd_fraction=cfg.kd_fraction, rows_per_rank=cfg.batch_size)
        marks.append(time.perf_counter())
        t.opt.zero_grad(set_to_none=True)
        loss.backward()
        marks.append(time.perf_counter())
        t.precision.clip_and_step(t.opt, t.model.parameters(), cfg.grad_clip)
        marks.append(time.perf_counter())
        ema_update(t.ema, t.model, cfg.ema_decay)
        marks.append(time.perf_counter())
        for name, a, b in zip(("take", "collate", "forward", "backward", "clip+adamw", "ema"),
                              marks, marks[1:]):
            parts[name].append(1000 * (b - a))
    return {k: statistics.median(v) for k, v in parts.items()}


def changed_parts(t: Trainer, repeats: int) -> dict[str, tuple[float, float]]:
    """The two changed parts alone, before vs after, interleaved: (before ms, after ms) medians
    of collate (then the loss's picks) and of one AdamW update on the trainer's gradients."""
    cfg, plan = t.cfg, t.plan
    records = t.bench_take(cfg.batch_size)
    loss, _ = distillation_loss(t.model, COLLATE(records, t.layout.max_text_len, t.device, cfg.seed),
                                schedule=plan.schedule, adjacent=plan.adjacent,
                                contiguous=plan.contiguous, kd_weight=cfg.kd_weight,
                                step_weight=cfg.step_weight, jitter=cfg.sigma_jitter,
                                kd_fraction=cfg.kd_fraction, rows_per_rank=cfg.batch_size)
    loss.backward()  # gradients for the optimiser timings
    params = [p.detach().clone().requires_grad_() for p in t.model.parameters()]
    for p, q in zip(params, t.model.parameters()):
        p.grad = q.grad.clone()
    optimisers = {legacy: torch.optim.AdamW(params, lr=1e-9, foreach=not legacy)
                  for legacy in (True, False)}

    def picks(batch: Batch) -> None:  # what the loss reads of the trajectories
        kd_rows(batch, cfg.sigma_jitter, plan.contiguous), step_rows(batch, plan.schedule, plan.adjacent)

    times: dict[str, dict[bool, list[float]]] = {"collate + picks": {True: [], False: []},
                                                 "adamw step": {True: [], False: []}}
    for _ in range(repeats):
        for legacy in (True, False):
            t0 = time.perf_counter()
            picks((legacy_collate if legacy else COLLATE)(records, t.layout.max_text_len,
                                                          t.device, cfg.seed))
            t1 = time.perf_counter()
            optimisers[legacy].step()
            t2 = time.perf_counter()
            times["collate + picks"][legacy].append(1000 * (t1 - t0))
            times["adamw step"][legacy].append(1000 * (t2 - t1))
    t.opt.zero_grad(set_to_none=True)
    return {k: (statistics.median(v[True]), statistics.median(v[False])) for k, v in times.items()}


CATEGORIES = {
    "matrix products": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm",
                        "aten::_scaled_dot_product", "aten::mkldnn_convolution",
                        "aten::convolution_backward"),
    "copies/cat/fill": ("aten::copy_", "aten::cat", "aten::fill_", "aten::zero_", "aten::index",
                        "aten::stack", "aten::clone", "aten::contiguous"),
    "reductions": ("aten::sum", "aten::mean", "aten::norm", "aten::linalg_vector_norm"),
    "norms/activations": ("aten::native_layer_norm", "aten::_fused_rms_norm", "aten::gelu",
                          "aten::softplus", "aten::_softmax", "aten::rms_norm", "aten::silu"),
    "element-wise": ("aten::mul", "aten::add", "aten::addcmul", "aten::div", "aten::sub",
                     "aten::neg", "aten::pow", "aten::where", "aten::lerp", "aten::sqrt",
                     "aten::addcdiv", "aten::exp", "aten::sigmoid", "aten::_foreach"),
}


def op_categories(t: Trainer, steps: int) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            t.train_step(t.bench_take)
    shares: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        name = event.key
        if not name.startswith("aten::"):
            continue
        group = next((g for g, prefixes in CATEGORIES.items()
                      if any(name.startswith(p) for p in prefixes)), "other aten ops")
        shares[group] += event.self_cpu_time_total
    total = sum(shares.values())
    return {k: v / total for k, v in sorted(shares.items(), key=lambda kv: -kv[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two variants")
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=32, help="cached trajectories per class")
    parser.add_argument("--profile", action="store_true", help="also op categories (torch.profiler)")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at start")
    with tempfile.TemporaryDirectory() as tmp:
        cache = make_cache(Path(tmp) / "cache", args.classes, args.seeds)
        for threads in args.threads:
            torch.set_num_threads(threads)
            before = trainer(cache, Path(tmp) / f"before{threads}", legacy=True)
            after = trainer(cache, Path(tmp) / f"after{threads}", legacy=False)
            times: dict[str, list[float]] = {"before": [], "after": []}
            timed_step(before, True), timed_step(after, False)  # warm-up
            for _ in range(args.rounds):
                for name, t, legacy in (("before", before, True), ("after", after, False)):
                    times[name] += [timed_step(t, legacy) for _ in range(args.steps)]
            same = all(torch.equal(a, b) for a, b in zip(before.model.state_dict().values(),
                                                         after.model.state_dict().values()))
            b_s, a_s = (statistics.median(times[k]) for k in ("before", "after"))
            print(f"\n{threads} thread(s), {len(times['after'])} steps each, load "
                  f"{os.getloadavg()[0]:.1f}: before {b_s:.3f} s/step, after {a_s:.3f} s/step, "
                  f"after/before {a_s / b_s:.3f} ({1 / a_s:.2f} vs {1 / b_s:.2f} steps/s); "
                  f"same weights after {1 + len(times['after'])} steps: {same}")
            parts = breakdown(after, args.steps)
            total = sum(parts.values())
            print("  breakdown (ms, this tree): " + ", ".join(
                f"{k} {v:.1f} ({v / total:.0%})" for k, v in parts.items()))
            for part, (old, new) in changed_parts(after, 6 * args.steps).items():
                print(f"  {part} alone: before {old:.1f} ms, after {new:.1f} ms ({new / old:.2f}x)")
            # the fixed cost of a step (Python, dispatch, optimiser, per-op overheads): the same
            # model at 2 trajectories per step, where the tensors are 32x smaller
            tiny = trainer(cache, Path(tmp) / f"tiny{threads}", legacy=False, batch_size=2)
            timed_step(tiny, False)
            floor = statistics.median(timed_step(tiny, False) for _ in range(2 * args.steps))
            print(f"  fixed cost (batch 2): {floor:.3f} s/step = {floor / a_s:.0%} of the batch-64 step")
            if args.profile:
                shares = op_categories(after, 2)
                print("  op self-CPU shares: " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))


if __name__ == "__main__":
    main()
