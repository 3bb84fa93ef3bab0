"""Stage 2: self-forcing -> S2DiT-AR (DESIGN 6), single process or one Ray Train rank.

1. the S2DiT-KD checkpoint (EMA weights, few-step plan) and the cache (noise, x0, text only);
   refuse a KD model that does not fit the cache
2. generator = block-causal copy of KD, its EMA; critic = copy of KD (the fake score); real =
   frozen KD (the real score, bidirectional, d = 0); one AdamW each for generator and critic
3. resume from the newest checkpoint under the output URL, if any
4. causal phase (``causal_steps``, causal.py): teacher forcing of the block-causal generator on
   the cached clean videos -> generator step -> EMA
5. DMD phase: rollout chunk by chunk (gradient at the exit step) -> DMD + regression ->
   generator step -> EMA; then ``critic_steps`` critic updates (the first on the same, detached
   samples)
6. checkpoint every N steps and at the end (stage "causal" during the causal phase, "ar" after;
   numbered by causal + DMD steps); metrics to JSONL (with their ``phase``) and TensorBoard

With ``world_size`` > 1 (``train_ar_ray``) each rank rolls out ``batch_size / world_size`` of
the global batch, gradients are averaged over ranks before clipping, and rank 0 alone writes.
Exit steps and per-row draws are keyed by step and sample id, so the ranks together compute
the single-process step.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time

import fsspec
import torch
from tqdm import tqdm

from ..checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    restore_optimizer,
    save_checkpoint,
    split_prefix,
)
from ..data import CacheStream, LoaderConfig
from ..distributed import average_gradients
from ..model import S2DiT, StudentConfig
from ..precision import Precision
from ..run_log import tensorboard_writer
from ..schedule import lr_factor
from .batch import AR_FIELDS, ARBatch, collate_ar
from .causal import CAUSAL_FIELDS, collate_causal, teacher_forcing_loss
from .config import ARConfig
from .losses import critic_loss, dmd_loss, regression_loss
from .real_score import KDRealScore, RealScore
from .rollout import exit_steps, rollout
from .source import KDSource, check_fits, load_kd_source


class ARTrainer:
    def __init__(self, init_url: str, cache_url: str, out_url: str, config: ARConfig, *,
                 rank: int = 0, world_size: int = 1, storage_options: dict | None = None,
                 real_score: RealScore | None = None):
        if config.batch_size % world_size:
            raise ValueError(f"batch_size {config.batch_size} must divide evenly over {world_size} workers")
        self.cfg, self.out_url, self.rank, self.world = config, out_url.rstrip("/"), rank, world_size
        self.device = torch.device(config.device)
        # 1. the KD checkpoint and the cache
        self.source: KDSource = load_kd_source(init_url)
        fields = AR_FIELDS + tuple(f for f in CAUSAL_FIELDS if f not in AR_FIELDS) \
            if config.causal_steps else AR_FIELDS
        self.stream = CacheStream(cache_url, fields=fields, storage_options=storage_options,
                                  config=LoaderConfig.for_training(config, rank, world_size))
        manifest = self.stream.reader.manifest
        self.layout = manifest.layout
        check_fits(self.source, self.layout, manifest.fingerprint_digest, cache_url)
        self.manifest_info = {"cache_url": cache_url, "cache_id": manifest.cache_id,
                              "generation": manifest.generation,
                              "fingerprint_digest": manifest.fingerprint_digest}
        self.plan = self.source.plan
        self.sigmas = [float(s) for s in self.plan["schedule_sigmas"]]  # N jumps + final 0
        chunk = config.chunk_frames or self.source.model_config.chunk_frames
        self.model_config: StudentConfig = self.source.model_config.replace(chunk_frames=chunk)
        if self.model_config.latent_frames % chunk:
            raise ValueError(f"chunk_frames {chunk} does not divide the cache's "
                             f"{self.model_config.latent_frames} latent frames")
        self.num_chunks = self.model_config.latent_frames // chunk
        # 2. generator, EMA, critic, real score, optimisers (all start from the KD EMA weights)
        self.model = self._kd_model()
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.critic = self._kd_model()
        self.real = self._kd_model().requires_grad_(False).eval()
        # DMD's real score: the frozen KD model, or the caller's (e.g. the exact analytic one)
        self.real_score: RealScore = real_score or KDRealScore(self.real)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=config.lr, betas=config.betas,
                                     weight_decay=config.weight_decay)
        self.critic_opt = torch.optim.AdamW(self.critic.parameters(), lr=config.critic_lr,
                                            betas=config.critic_betas, weight_decay=config.weight_decay)
        # the causal phase is plain regression: its own optimiser with the usual beta1
        self.causal_opt = torch.optim.AdamW(self.model.parameters(), lr=config.causal_lr,
                                            betas=config.causal_betas, weight_decay=config.weight_decay)
        # generator and critic: separate backward passes, so separate fp16 loss scalers
        self.precision = Precision(self.device, config.autocast_dtype,
                                   init_scale=config.loss_scale_init)
        self.critic_precision = Precision(self.device, config.autocast_dtype,
                                          init_scale=config.loss_scale_init)
        self.step = 0  # DMD-phase generator steps
        self.causal_step = 0
        # 3. resume
        latest = latest_checkpoint(self.out_url)
        if latest:
            self._resume(latest, manifest.cache_id)

    def _kd_model(self) -> S2DiT:
        model = S2DiT(self.model_config)
        model.load_state_dict(self.source.weights)
        return model.to(self.device)

    def _resume(self, url: str, cache_id: str) -> None:
        tensors, state = load_checkpoint(url)
        if state.get("stage") not in ("ar", "causal"):
            raise ValueError(f"{self.out_url} holds a run of another stage; use a new --out")
        if state["manifest"]["cache_id"] != cache_id:
            raise ValueError(f"{self.out_url} holds a run on cache {state['manifest']['cache_id']}; "
                             "use a new --out for another cache")
        begun = state["init"]
        if (begun["step"], begun["manifest"].get("cache_id")) != (self.source.step,
                                                                   self.source.manifest.get("cache_id")):
            raise ValueError(f"{self.out_url} holds a run initialised from {begun['checkpoint']} "
                             f"(step {begun['step']}), not {self.source.url}; use a new --out")
        for name, module in (("model", self.model), ("ema", self.ema), ("critic", self.critic),
                             ("real", self.real)):
            module.load_state_dict(split_prefix(tensors, name))
        restore_optimizer(self.opt, tensors, state)
        restore_optimizer(self.critic_opt, tensors, state, prefix="critic_optim")
        if "causal_optim" in state.get("optimizers", {}):
            restore_optimizer(self.causal_opt, tensors, state, prefix="causal_optim")
        scalers = state.get("grad_scalers", {})
        self.precision.load_state_dict(scalers.get("generator"))
        self.critic_precision.load_state_dict(scalers.get("critic"))
        self.stream.load_state_dict(state["loader"])
        self.causal_step = int(state.get("causal_step", 0))
        self.step = int(state.get("dmd_step", state["step"]))

    def _records(self):
        """One record stream for both phases: (count) -> that many records, in loader order."""
        it = iter(self.stream)

        def take(count: int) -> list[dict]:
            records = []
            for _ in range(count):
                record = next(it)
                record["_epoch"] = self.stream.epoch
                records.append(record)
            return records
        return take

    def _batches(self, take):
        while True:
            yield collate_ar(take(self.cfg.batch_size // self.world), self.layout.max_text_len,
                             seed=self.cfg.seed, sigma_shift=self.cfg.dmd_sigma_shift,
                             sigma_range=(self.cfg.dmd_sigma_min, self.cfg.dmd_sigma_max),
                             device=self.device)

    def causal_train_step(self, take) -> dict[str, float]:
        """One teacher-forcing step of the causal phase (causal.py)."""
        cfg = self.cfg
        per_rank = (cfg.causal_batch_size or cfg.batch_size) // self.world
        batch = collate_causal(take(per_rank), self.layout.max_text_len, seed=cfg.seed,
                               num_chunks=self.num_chunks, device=self.device)
        for group in self.causal_opt.param_groups:  # short linear warm-up, then constant
            group["lr"] = cfg.causal_lr * min(1.0, (self.causal_step + 1) / max(1, cfg.warmup_steps))
        with self.precision.autocast():
            loss, row = teacher_forcing_loss(
                self.model, batch, schedule=[int(k) for k in self.plan["schedule"]],
                context_sigma=cfg.context_sigma, jump_fraction=cfg.causal_jump_fraction,
                jump_first_chunk=cfg.causal_jump_first_chunk, sigma_shift=cfg.causal_sigma_shift)
        self.causal_opt.zero_grad(set_to_none=True)
        self.precision.backward(loss)
        average_gradients(self.model, self.world)
        row["grad_norm"] = self.precision.clip_and_step(self.causal_opt, self.model.parameters(),
                                                        cfg.grad_clip)
        with torch.no_grad():
            torch._foreach_lerp_(list(self.ema.parameters()), list(self.model.parameters()),
                                 1 - cfg.ema_decay)
        self.causal_step += 1
        return row

    @property
    def in_causal_phase(self) -> bool:
        return self.causal_step < self.cfg.causal_steps

    def _rollout(self, batch: ARBatch, stream: int, grad: bool) -> tuple[torch.Tensor, list[int]]:
        exits = exit_steps(self.cfg.seed, self.step, self.num_chunks, len(self.sigmas) - 1,
                           per_chunk=self.cfg.exit_per_chunk, stream=stream)
        with self.precision.autocast():
            x = rollout(self.model, batch.noise, batch.text, batch.text_mask, self.sigmas, exits,
                        context_sigma=self.cfg.context_sigma, context_noise=batch.context_noise,
                        grad=grad)
        return x, exits

    def train_step(self, batches) -> dict[str, float]:
        """One generator step and its critic steps; returns the step's metrics."""
        cfg, row = self.cfg, {}
        batch = next(batches)
        update_generator = self.step >= cfg.critic_warmup_steps
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(self.step, cfg)
        x, exits = self._rollout(batch, stream=0, grad=update_generator)
        row["exit_step"] = sum(exits) / len(exits)
        if update_generator:
            with self.precision.autocast():
                reg = regression_loss(x, batch.x0)
                loss = cfg.regression_weight * reg
                row["regression_loss"] = reg.item()
                if cfg.dmd_weight:
                    dmd, parts = dmd_loss(x, self.real_score, self.critic, batch.text,
                                          batch.text_mask, batch.dmd, batch)
                    loss = loss + cfg.dmd_weight * dmd
                    row.update(dmd_loss=dmd.item(), **parts)
            self.opt.zero_grad(set_to_none=True)
            self.precision.backward(loss)
            average_gradients(self.model, self.world)  # before unscaling: one skip decision
            row["grad_norm"] = self.precision.clip_and_step(self.opt, self.model.parameters(),
                                                            cfg.grad_clip)
            with torch.no_grad():
                torch._foreach_lerp_(list(self.ema.parameters()), list(self.model.parameters()),
                                     1 - cfg.ema_decay)
            row["loss"] = loss.item()
        critic_losses = []
        for c in range(cfg.critic_steps):
            if c:  # further critic steps see fresh rollouts of the updated generator
                batch = next(batches)
                x, _ = self._rollout(batch, stream=c, grad=False)
            with self.critic_precision.autocast():
                closs = critic_loss(self.critic, x, batch.text, batch.text_mask, batch.critic)
            self.critic_opt.zero_grad(set_to_none=True)
            self.critic_precision.backward(closs)
            average_gradients(self.critic, self.world)
            row["critic_grad_norm"] = self.critic_precision.clip_and_step(
                self.critic_opt, self.critic.parameters(), cfg.critic_grad_clip)
            critic_losses.append(closs.item())
        if critic_losses:
            row["critic_loss"] = sum(critic_losses) / len(critic_losses)
        self.step += 1
        return row

    def checkpoint(self) -> str:
        # a checkpoint before the first DMD step holds the causal phase's model
        causal = bool(self.cfg.causal_steps) and self.step == 0
        extra = {"stage": "causal" if causal else "ar",
                 "causal_step": self.causal_step, "dmd_step": self.step, "config": self.cfg.to_json(), "model_config": self.model_config.to_json(),
                 "manifest": self.manifest_info, "plan": self.plan,
                 "real_score": self.real_score.name, "init": self.source.describe(),
                 "loader": self.stream.state_dict(),
                 "grad_scalers": {"generator": self.precision.state_dict(),
                                  "critic": self.critic_precision.state_dict()}}
        return save_checkpoint(self.out_url, self.causal_step + self.step, model=self.model, ema=self.ema,
                               optimizer=self.opt, extra=extra,
                               modules={"critic": self.critic, "real": self.real},
                               optimizers={"critic_optim": self.critic_opt,
                                           "causal_optim": self.causal_opt})

    def run(self, *, progress: bool = True, stop_after: int | None = None) -> str | None:
        cfg, main = self.cfg, self.rank == 0
        fs, root = fsspec.core.url_to_fs(self.out_url)
        fs.makedirs(root, exist_ok=True)
        tb = tensorboard_writer(self.out_url, root) if main else None
        total = cfg.causal_steps + cfg.steps
        bar = tqdm(total=total, initial=self.causal_step + self.step, desc="S2DiT-AR",
                   disable=not (progress and main))
        take = self._records()
        batches = self._batches(take)
        started, ran, last_ckpt = time.perf_counter(), 0, None
        self.phase_seconds = {"causal": 0.0, "dmd": 0.0}
        with fs.open(f"{root}/metrics.jsonl", "a") if main else contextlib.nullcontext() as log:
            while self.causal_step + self.step < total:
                wait0, t0 = self.stream.wait_seconds, time.perf_counter()
                phase = "causal" if self.in_causal_phase else "dmd"
                row = self.causal_train_step(take) if phase == "causal" else self.train_step(batches)
                done = self.causal_step + self.step
                self.phase_seconds[phase] += time.perf_counter() - t0
                ran += 1
                bar.update(1)
                if main and (done % cfg.log_every == 0 or done == total
                             or (phase == "causal" and not self.in_causal_phase)):
                    # losses are rank 0's share of the global batch
                    opt = self.causal_opt if phase == "causal" else self.opt
                    row = {"step": done, "phase": phase, "causal_step": self.causal_step,
                           "dmd_step": self.step, **row, "lr": opt.param_groups[0]["lr"],
                           "step_seconds": time.perf_counter() - t0,
                           "loader_wait_s": self.stream.wait_seconds - wait0}
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    if tb is not None:
                        for key, value in row.items():
                            if isinstance(value, (int, float)):
                                tb.add_scalar(key, value, done)
                    shown = {k: f"{row[k]:.4f}" for k in ("causal_loss", "regression_loss",
                                                          "critic_loss") if k in row}
                    bar.set_postfix(shown)
                if main and (done % cfg.checkpoint_every == 0 or done == total
                             or (phase == "causal" and not self.in_causal_phase)):
                    last_ckpt = self.checkpoint()
                if stop_after is not None and ran >= stop_after:
                    break
        bar.close()
        if tb is not None:
            tb.close()
        self.train_seconds = time.perf_counter() - started
        return last_ckpt


def train_ar(init_url: str, cache_url: str, out_url: str, config: ARConfig, *,
             progress: bool = True) -> str | None:
    """Train (or resume) S2DiT-AR from a KD checkpoint on a cache; returns the final checkpoint URL."""
    return ARTrainer(init_url, cache_url, out_url, config).run(progress=progress)
