"""Stage 1: the 2-in-1 distillation trainer (S2DiT-KD), single process or one Ray Train rank.

1. open the cache (URL@generation), check fingerprint and shapes, derive the student schedule
2. build the student from the cache's shapes (+ config overrides), AdamW, EMA
3. resume from the newest checkpoint under the output URL, if any
4. loop: stream records -> KD rows + step rows -> one forward -> clip -> step -> EMA
5. checkpoint every N steps and at the end; metrics to JSONL and TensorBoard
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from typing import Any, Callable

import fsspec
import numpy as np
import torch
from tqdm import tqdm

from cache_schema import CacheLayout, FingerprintMismatch
from .checkpoint import (latest_checkpoint, load_checkpoint, restore_optimizer, save_checkpoint,
                         split_prefix)
from .config import TrainConfig
from .data import CacheStream, LoaderConfig
from .losses import Batch, distillation_loss
from .model import S2DiT, StudentConfig
from .precision import Precision
from .search.layout_file import model_overrides
from .run_log import tensorboard_writer
from .schedule import lr_factor
from .text import pad_text  # noqa: F401  (re-exported: older callers import it from here)

FIELDS = ("states", "v_cond", "v_uncond", "guidance", "sigmas", "x0", "text_emb")


@dataclass
class Plan:
    """The student's schedule on the cache's stored grid."""

    schedule: torch.Tensor  # (N,) positions along S of the few-step start states
    adjacent: torch.Tensor  # (N,) bool: jump k is a single solver step
    contiguous: torch.Tensor  # (S,) bool: stored step s+1 is the solver's next state
    grid_sigmas: list[float]  # stored sigmas + 0: the full-step sampling grid
    schedule_sigmas: list[float]  # few-step sampling schedule + 0

    def to_json(self) -> dict[str, Any]:
        return {"schedule": self.schedule.tolist(), "adjacent": self.adjacent.tolist(),
                "contiguous": self.contiguous.tolist(), "grid_sigmas": self.grid_sigmas,
                "schedule_sigmas": self.schedule_sigmas}


def make_plan(layout: CacheLayout, sigmas: np.ndarray, student_steps: int) -> Plan:
    n, keep = layout.num_steps, list(layout.keep_steps)
    starts = sorted({int(round(k * n / student_steps)) for k in range(student_steps)})
    missing = [s for s in starts if s not in keep]
    if missing:
        raise ValueError(f"the {student_steps}-step student schedule needs solver steps {starts} but "
                         f"the cache stores {keep} (missing {missing}); regenerate with "
                         f"--keep-steps including them (e.g. uniform:{student_steps}) or change "
                         "student_steps")
    positions = [keep.index(s) for s in starts]
    nxt = starts[1:] + [n]
    adjacent = torch.tensor([b - a == 1 for a, b in zip(starts, nxt)])
    contiguous = torch.tensor([(keep[i + 1] if i + 1 < len(keep) else n) - keep[i] == 1
                               for i in range(len(keep))])
    sig = [float(s) for s in sigmas]
    return Plan(torch.tensor(positions), adjacent, contiguous, sig + [0.0],
                [sig[p] for p in positions] + [0.0])


def record_uniforms(seed: int, epoch: int, sample_id: str) -> np.ndarray:
    # (jitter state, jitter position, jump, KD-row draw); random(4)[:3] == random(3)
    return np.random.default_rng([seed, epoch, int(sample_id[:15], 16)]).random(4)


def collate(records: list[dict], max_text_len: int, device, seed: int) -> Batch:
    # Stack in the stored dtype, widen in torch (multi-threaded), then move. (B, ...) float32
    f32 = lambda key: torch.from_numpy(np.stack([r[key] for r in records])).to(device, torch.float32)  # noqa: E731
    text, mask = pad_text(records, max_text_len)
    u = torch.from_numpy(np.stack([record_uniforms(seed, r["_epoch"], r["sample_id"])
                                   for r in records])).float()
    return Batch(states=f32("states"), v_cond=f32("v_cond"), v_uncond=f32("v_uncond"),
                 guidance=f32("guidance"), sigmas=f32("sigmas"), x0=f32("x0"),
                 text=text.to(device), text_mask=mask.to(device), u=u.to(device))


def student_config_for(layout: CacheLayout, overrides: dict[str, Any],
                       layout_file: str | None = None) -> StudentConfig:
    """The student for a cache: its shapes, the searched architecture of ``layout_file`` (if
    any), then the config's ``model`` overrides."""
    c, f, h, w = layout.latent_shape
    shapes = {"latent_channels": c, "latent_frames": f, "latent_height": h, "latent_width": w,
              "text_dim": layout.text_dim}
    overrides = model_overrides(layout_file, overrides, shapes)
    clash = {k: (v, shapes[k]) for k, v in overrides.items() if k in shapes and v != shapes[k]}
    if clash:
        raise ValueError(f"model config {clash} (config, cache) does not fit the cache's shapes")
    return StudentConfig(**{**overrides, **shapes})


class Trainer:
    def __init__(self, cache_url: str, out_url: str, config: TrainConfig, *, rank: int = 0,
                 world_size: int = 1, wrap_model: Callable | None = None,
                 storage_options: dict | None = None):
        self.cfg, self.out_url, self.rank, self.world = config, out_url.rstrip("/"), rank, world_size
        self.device = torch.device(config.device)
        # 1. the cache
        self.stream = CacheStream(cache_url, fields=FIELDS, storage_options=storage_options,
                                  config=LoaderConfig.for_training(config, rank, world_size))
        manifest = self.stream.reader.manifest
        if config.expect_fingerprint_digest and config.expect_fingerprint_digest != manifest.fingerprint_digest:
            raise FingerprintMismatch(
                f"cache {cache_url} has fingerprint {manifest.fingerprint_digest[:16]}, the training "
                f"config expects {config.expect_fingerprint_digest[:16]}: point --cache at the "
                "intended cache or update expect_fingerprint_digest")
        self.layout = manifest.layout
        first = next(self.stream.reader.iter_records(fields=["sigmas"]))
        self.plan = make_plan(self.layout, first["sigmas"], config.student_steps)
        self.manifest_info = {"cache_url": cache_url, "cache_id": manifest.cache_id,
                              "generation": manifest.generation,
                              "fingerprint_digest": manifest.fingerprint_digest}
        # 2. model, EMA, optimiser
        torch.manual_seed(config.seed)
        self.model_config = student_config_for(self.layout, config.model, config.layout_file)
        self.model = S2DiT(self.model_config).to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.train_model = wrap_model(self.model) if wrap_model else self.model
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=config.lr, betas=config.betas,
                                     weight_decay=config.weight_decay)
        self.precision = Precision(self.device, config.autocast_dtype,
                                   init_scale=config.loss_scale_init)
        self.step = 0
        # 3. resume
        latest = self.resumed_from = latest_checkpoint(self.out_url)
        if latest:
            tensors, state = load_checkpoint(latest)
            if state["manifest"]["cache_id"] != manifest.cache_id:
                raise ValueError(f"{self.out_url} holds a run on cache {state['manifest']['cache_id']}; "
                                 "use a new --out for another cache")
            self.model.load_state_dict(split_prefix(tensors, "model"))
            self.ema.load_state_dict(split_prefix(tensors, "ema"))
            restore_optimizer(self.opt, tensors, state)
            self.precision.load_state_dict(state.get("grad_scaler"))
            self.stream.load_state_dict(state["loader"][str(rank)] if "0" in state["loader"] else state["loader"])
            self.step = int(state["step"])

    def _batches(self):
        per_rank = self.cfg.batch_size // self.world
        it = iter(self.stream)
        while True:
            records = []
            for _ in range(per_rank):
                record = next(it)
                record["_epoch"] = self.stream.epoch
                records.append(record)
            yield collate(records, self.layout.max_text_len, self.device, self.cfg.seed)

    def checkpoint(self) -> str:
        extra = {"config": self.cfg.to_json(), "model_config": self.model_config.to_json(),
                 "manifest": self.manifest_info, "plan": self.plan.to_json(),
                 "loader": self.stream.state_dict(), "grad_scaler": self.precision.state_dict()}
        return save_checkpoint(self.out_url, self.step, model=self.model, ema=self.ema,
                               optimizer=self.opt, extra=extra)

    def run(self, *, progress: bool = True, stop_after: int | None = None) -> str | None:
        cfg, main = self.cfg, self.rank == 0
        fs, root = fsspec.core.url_to_fs(self.out_url)
        fs.makedirs(root, exist_ok=True)
        log = fs.open(f"{root}/metrics.jsonl", "a") if main else None
        tb = tensorboard_writer(self.out_url, root) if main else None
        if log and self.resumed_from:  # a restart (by hand or by Ray Train) shows in the metrics
            log.write(json.dumps({"step": self.step, "event": "resumed",
                                  "checkpoint": self.resumed_from}) + "\n")
        bar = tqdm(total=cfg.steps, initial=self.step, desc="S2DiT-KD", disable=not (progress and main))
        batches = self._batches()
        started, ran, last_ckpt = time.perf_counter(), 0, None
        while self.step < cfg.steps:
            wait0 = self.stream.wait_seconds
            t0 = time.perf_counter()
            batch = next(batches)
            for group in self.opt.param_groups:
                group["lr"] = cfg.lr * lr_factor(self.step, cfg)
            with self.precision.autocast():
                loss, parts = distillation_loss(
                    self.train_model, batch, schedule=self.plan.schedule,
                    adjacent=self.plan.adjacent, contiguous=self.plan.contiguous,
                    kd_weight=cfg.kd_weight, step_weight=cfg.step_weight, jitter=cfg.sigma_jitter,
                    kd_fraction=cfg.kd_fraction, rows_per_rank=cfg.batch_size // self.world)
            self.opt.zero_grad(set_to_none=True)
            self.precision.backward(loss)
            grad_norm = self.precision.clip_and_step(self.opt, self.model.parameters(), cfg.grad_clip)
            with torch.no_grad():
                torch._foreach_lerp_(list(self.ema.parameters()), list(self.model.parameters()),
                                     1 - cfg.ema_decay)
            self.step += 1
            ran += 1
            bar.update(1)
            if main and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                dt = time.perf_counter() - t0
                row = {"step": self.step, "loss": loss.item(), **parts, "grad_norm": float(grad_norm),
                       "lr": self.opt.param_groups[0]["lr"],
                       "samples_per_s": cfg.batch_size / max(dt, 1e-9),
                       "loader_wait_s": self.stream.wait_seconds - wait0,
                       "skipped_shards": len(self.stream.skipped_shards)}
                if self.precision.loss_scale is not None:
                    row["loss_scale"] = self.precision.loss_scale
                log.write(json.dumps(row) + "\n")
                log.flush()
                if tb is not None:
                    for key, value in row.items():
                        tb.add_scalar(key, value, self.step)
                bar.set_postfix(loss=f"{row['loss']:.4f}")
            if main and (self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps):
                last_ckpt = self.checkpoint()
            if stop_after is not None and ran >= stop_after:
                break
        bar.close()
        if log:
            log.close()
        if tb is not None:
            tb.close()
        self.train_seconds = time.perf_counter() - started
        return last_ckpt


def train_kd(cache_url: str, out_url: str, config: TrainConfig, *, progress: bool = True) -> str | None:
    """Train (or resume) S2DiT-KD on a cache; returns the final checkpoint URL."""
    return Trainer(cache_url, out_url, config).run(progress=progress)
