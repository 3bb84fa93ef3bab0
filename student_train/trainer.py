"""Stage 1: the 2-in-1 distillation trainer (S2DiT-KD), single process or one Ray Train rank.

1. open the cache (URL@generation), check fingerprint and shapes, derive the student schedule
2. build the student from the cache's shapes (+ config overrides), AdamW, EMA
3. resume from the newest checkpoint under the output URL, if any
4. loop: stream records -> KD rows + step rows -> one forward -> clip -> step -> EMA
5. checkpoint every N steps and at the end (stage "kd"); metrics to JSONL and TensorBoard

Steps 3 and 5, the record stream, metrics and progress are the loop core's (loop.py), shared
with stage 2; this module is the KD stage: its batch, loss, step and checkpoint contents.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cache_schema import CacheLayout, FingerprintMismatch

from .checkpoint import restore_optimizer, split_prefix
from .config import TrainConfig
from .data import stage1_selector
from .loop import Parts, Phase, Take, TrainLoop
from .losses import Batch, distillation_loss
from .model import S2DiT, StudentConfig
from .optim import adamw, ema_update, optimiser_step, set_lr
from .precision import Precision
from .schedule import lr_factor
from .search.layout_file import model_overrides
from .stage_spec import TrainingStage
from .text import NULL_TEXT, pad_text

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
    starts = sorted({round(k * n / student_steps) for k in range(student_steps)})
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
    # (jitter state, jitter position, jump, KD-row draw, conditioning-dropout draw);
    # random(5)[:4] == random(4): the first four are what they were before the fifth existed
    return np.random.default_rng([seed, epoch, int(sample_id[:15], 16)]).random(5)


def collate(records: list[dict], max_text_len: int, device, seed: int, *,
            null_text: bool = False) -> Batch:
    """``null_text``: also the records' unconditional embeddings (conditioning dropout)."""
    # Stack in the stored dtype and move. The (B, S, ...) trajectories stay in it: a step uses
    # a few of their S states, which the loss widens to float32 after picking them (the same
    # values as widening all first, at a fraction of the copies). The rest: (B, ...) float32.
    stored = lambda key: torch.from_numpy(np.stack([r[key] for r in records])).to(device)
    f32 = lambda key: stored(key).to(torch.float32)
    text, mask = pad_text(records, max_text_len)
    u = torch.from_numpy(np.stack([record_uniforms(seed, r["_epoch"], r["sample_id"])
                                   for r in records])).float()
    null, null_mask = pad_text(records, max_text_len, NULL_TEXT) if null_text else (None, None)
    return Batch(states=stored("states"), v_cond=stored("v_cond"), v_uncond=stored("v_uncond"),
                 guidance=f32("guidance"), sigmas=f32("sigmas"), x0=f32("x0"),
                 text=text.to(device), text_mask=mask.to(device), u=u.to(device),
                 null_text=None if null is None else null.to(device),
                 null_mask=None if null_mask is None else null_mask.to(device))


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


class Trainer(TrainLoop):
    """Stage 1 on the one loop core (loop.py): one phase, "kd"."""

    DESC, RESUMES, PROGRESS_KEYS = "S2DiT-KD", ("kd",), ("loss",)

    def __init__(self, cache_url: str, out_url: str, config: TrainConfig, *, rank: int = 0,
                 world_size: int = 1, wrap_model: Callable | None = None):
        super().__init__(out_url, config, rank=rank, world_size=world_size)
        # 1. the cache
        manifest = self.open_cache(cache_url, FIELDS + ((NULL_TEXT,) if config.cond_dropout else ()))
        if config.expect_fingerprint_digest and config.expect_fingerprint_digest != manifest.fingerprint_digest:
            raise FingerprintMismatch(
                f"cache {cache_url} has fingerprint {manifest.fingerprint_digest[:16]}, the training "
                f"config expects {config.expect_fingerprint_digest[:16]}: point --cache at the "
                "intended cache or update expect_fingerprint_digest")
        first = next(self.stream.reader.iter_records(fields=["sigmas"]))
        self.plan = make_plan(self.layout, first["sigmas"], config.student_steps)
        # read only the steps each record's rows use (Zarr: those (sample, step) chunks)
        self.stream.select_steps(stage1_selector(
            seed=config.seed, num_kept=self.layout.num_kept, schedule=self.plan.schedule.tolist(),
            kd_fraction=config.kd_fraction, uniforms=record_uniforms))
        # 2. model, EMA, optimiser
        torch.manual_seed(config.seed)
        self.model_config = student_config_for(self.layout, config.model, config.layout_file)
        self.model = S2DiT(self.model_config).to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.train_model = wrap_model(self.model) if wrap_model else self.model
        self.opt = adamw(self.model, config.lr, config.betas, config.weight_decay)
        self.precision = Precision(self.device, config.autocast_dtype,
                                   init_scale=config.loss_scale_init)
        self.step = 0
        # 3. resume
        self.resume()

    def phases(self) -> list[Phase]:
        return [Phase("kd", self.cfg.steps, lambda: self.step, self.train_step, self.cfg.batch_size)]

    def train_step(self, take: Take) -> dict[str, Any]:
        """KD rows + step rows of this rank's share of the batch -> one forward -> clip ->
        step -> EMA."""
        cfg, per_rank = self.cfg, self.cfg.batch_size // self.world
        batch = collate(take(per_rank), self.layout.max_text_len, self.device, cfg.seed,
                        null_text=bool(cfg.cond_dropout))
        set_lr(self.opt, cfg.lr * lr_factor(self.step, cfg))
        with self.precision.autocast():
            loss, parts = distillation_loss(
                self.train_model, batch, schedule=self.plan.schedule,
                adjacent=self.plan.adjacent, contiguous=self.plan.contiguous,
                kd_weight=cfg.kd_weight, step_weight=cfg.step_weight, jitter=cfg.sigma_jitter,
                kd_fraction=cfg.kd_fraction, rows_per_rank=per_rank, cond_dropout=cfg.cond_dropout)
        # world_size 1: under Ray Train the DDP wrapper (train_model) averaged the gradients
        grad_norm = optimiser_step(self.opt, self.precision, loss, self.model, cfg.grad_clip)
        ema_update(self.ema, self.model, cfg.ema_decay)
        self.step += 1
        row = {"loss": loss.item(), **parts, "grad_norm": grad_norm,
               "lr": self.opt.param_groups[0]["lr"]}
        if self.precision.loss_scale is not None:
            row["loss_scale"] = self.precision.loss_scale
        return row

    def restore(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        self.model.load_state_dict(split_prefix(tensors, "model"))
        self.ema.load_state_dict(split_prefix(tensors, "ema"))
        restore_optimizer(self.opt, tensors, state)
        self.precision.load_state_dict(state.get("grad_scaler"))
        self.step = int(state["step"])

    def checkpoint_stage(self) -> str:
        return "kd"

    def plan_json(self) -> dict[str, Any]:
        return self.plan.to_json()

    def checkpoint_parts(self) -> Parts:
        return Parts(self.model, self.ema, self.opt, {"grad_scaler": self.precision.state_dict()})


def build_kd(config: TrainConfig, out_url: str, *, cache_url: str, rank: int = 0,
             world_size: int = 1, wrap_model: Callable | None = None) -> Trainer:
    return Trainer(cache_url, out_url, config, rank=rank, world_size=world_size,
                   wrap_model=wrap_model)


KD_STAGE = TrainingStage(name="kd", title="S2DiT-KD", config=TrainConfig, build=build_kd,
                         inputs=("cache_url",), checkpoints=Trainer.RESUMES, ddp=True)
