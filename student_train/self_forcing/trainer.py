"""Stage 2: self-forcing -> S2DiT-AR (DESIGN 6), single process or one Ray Train rank.

1. the S2DiT-KD checkpoint (EMA weights, few-step plan) and the cache (noise, x0, text only);
   refuse a KD model that does not fit the cache
2. generator = block-causal copy of KD, its EMA; critic = copy of KD (the fake score); real =
   frozen KD (the real score, bidirectional, d = 0); one AdamW each for generator and critic
3. resume from the newest checkpoint under the output URL, if any
4. causal phase (``causal_steps``, causal.py): teacher forcing of the block-causal generator on
   the cached clean videos (jumps from the cache's causal ODE pairs when it holds them, of the
   student's chunk size, unless ``use_causal_pairs`` is false) -> generator step -> EMA
5. DMD phase: rollout chunk by chunk (gradient at the exit step) -> DMD + regression ->
   generator step -> EMA; then ``critic_steps`` critic updates (the first on the same, detached
   samples)
6. checkpoint every N steps, at the end of the causal phase and at the end (stage "causal"
   during the causal phase, "ar" after; numbered by causal + DMD steps); metrics to JSONL (with
   their ``phase``) and TensorBoard

Steps 3 and 6, the record stream shared by both phases, metrics and progress are the loop
core's (loop.py), shared with stage 1; this module is stage 2's phases and checkpoint contents.

With ``world_size`` > 1 (``launch`` on Ray Train workers) each rank rolls out ``batch_size / world_size`` of
the global batch, gradients are averaged over ranks before clipping, and rank 0 alone writes.
Exit steps and per-row draws are keyed by step and sample id, so the ranks together compute
the single-process step.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from cache_schema import causal_chunk_frames, teacher_digest

from ..checkpoint import restore_optimizer, split_prefix
from ..loop import Parts, Phase, Take, TrainLoop
from ..model import S2DiT, StudentConfig
from ..optim import adamw, ema_update, optimiser_step, set_lr
from ..precision import Precision
from ..schedule import lr_factor
from ..stage_spec import TrainingStage, configured_context
from ..text import NULL_TEXT
from .batch import AR_FIELDS, ARBatch, collate_ar
from .causal import causal_fields, collate_causal, teacher_forcing_loss
from .config import ARConfig
from .losses import critic_loss, dmd_loss, regression_loss
from .real_score import KDRealScore, RealScore
from .rollout import exit_steps, rollout
from .source import KDSource, check_fits, load_kd_source


class ARTrainer(TrainLoop):
    """Stage 2 on the one loop core (loop.py): phases "causal", then "dmd"."""

    DESC, RESUMES = "S2DiT-AR", ("causal", "ar")
    PROGRESS_KEYS = ("causal_loss", "regression_loss", "critic_loss")

    def __init__(self, init_url: str, cache_url: str, out_url: str, config: ARConfig, *,
                 rank: int = 0, world_size: int = 1, real_score: RealScore | None = None):
        super().__init__(out_url, config, rank=rank, world_size=world_size)
        # 1. the KD checkpoint and the cache
        self.source: KDSource = load_kd_source(init_url)
        # chunk frames of the cache's causal ODE pairs the causal phase learns from (0: none,
        # or ignored with use_causal_pairs = false)
        self.pair_chunk = 0

        def fields(manifest) -> tuple[str, ...]:
            if not config.causal_steps:
                return AR_FIELDS
            if config.use_causal_pairs:
                self.pair_chunk = causal_chunk_frames(manifest.fingerprint)
            null = (NULL_TEXT,) if config.cond_dropout else ()
            return AR_FIELDS + tuple(f for f in causal_fields(bool(self.pair_chunk)) + null
                                     if f not in AR_FIELDS)

        manifest = self.open_cache(cache_url, fields)
        check_fits(self.source, self.layout, manifest.fingerprint_digest, cache_url,
                   teacher_digest(manifest.fingerprint))
        self.plan = self.source.plan
        self.sigmas = [float(s) for s in self.plan["schedule_sigmas"]]  # N jumps + final 0
        chunk = config.chunk_frames or self.source.model_config.chunk_frames
        if self.pair_chunk and self.pair_chunk != chunk:
            raise ValueError(
                f"the cache {cache_url} holds causal ODE pairs of {self.pair_chunk}-frame chunks "
                f"([job.teacher] causal_chunk_frames = {self.pair_chunk}), but the student "
                f"streams {chunk}-frame chunks (chunk_frames = {chunk}): train with "
                f"[train_ar] chunk_frames = {self.pair_chunk}, or regenerate the cache with "
                f"causal_chunk_frames = {chunk}")
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
        self.opt = adamw(self.model, config.lr, config.betas, config.weight_decay)
        self.critic_opt = adamw(self.critic, config.critic_lr, config.critic_betas,
                                config.weight_decay)
        # the causal phase is plain regression: its own optimiser with the usual beta1
        self.causal_opt = adamw(self.model, config.causal_lr, config.causal_betas,
                                config.weight_decay)
        # generator and critic: separate backward passes, so separate fp16 loss scalers
        self.precision = Precision(self.device, config.autocast_dtype,
                                   init_scale=config.loss_scale_init)
        self.critic_precision = Precision(self.device, config.autocast_dtype,
                                          init_scale=config.loss_scale_init)
        self.step = 0  # DMD-phase generator steps
        self.causal_step = 0
        # 3. resume
        self.resume()

    def _kd_model(self) -> S2DiT:
        model = S2DiT(self.model_config)
        model.load_state_dict(self.source.weights)
        return model.to(self.device)

    def phases(self) -> list[Phase]:
        cfg = self.cfg
        return [Phase("causal", cfg.causal_steps, lambda: self.causal_step, self.causal_train_step,
                      cfg.causal_batch_size or cfg.batch_size),
                Phase("dmd", cfg.steps, lambda: self.step, self.train_step, cfg.batch_size)]

    def restore(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
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
        self.causal_step = int(state.get("causal_step", 0))
        self.step = int(state.get("dmd_step", state["step"]))

    def _batch(self, take: Take) -> ARBatch:
        return collate_ar(take(self.cfg.batch_size // self.world), self.layout.max_text_len,
                          seed=self.cfg.seed, sigma_shift=self.cfg.dmd_sigma_shift,
                          sigma_range=(self.cfg.dmd_sigma_min, self.cfg.dmd_sigma_max),
                          device=self.device)

    def _counters(self) -> dict[str, int]:
        return {"causal_step": self.causal_step, "dmd_step": self.step}

    def causal_train_step(self, take: Take) -> dict[str, Any]:
        """One teacher-forcing step of the causal phase (causal.py)."""
        cfg = self.cfg
        per_rank = (cfg.causal_batch_size or cfg.batch_size) // self.world
        batch = collate_causal(take(per_rank), self.layout.max_text_len, seed=cfg.seed,
                               num_chunks=self.num_chunks, device=self.device,
                               pairs=bool(self.pair_chunk), cond_dropout=cfg.cond_dropout)
        # short linear warm-up, then constant
        set_lr(self.causal_opt, cfg.causal_lr * min(1.0, (self.causal_step + 1) / max(1, cfg.warmup_steps)))
        with self.precision.autocast():
            loss, row = teacher_forcing_loss(
                self.model, batch, schedule=[int(k) for k in self.plan["schedule"]],
                context_sigma=cfg.context_sigma, jump_fraction=cfg.causal_jump_fraction,
                jump_first_chunk=cfg.causal_jump_first_chunk, sigma_shift=cfg.causal_sigma_shift)
        row["grad_norm"] = optimiser_step(self.causal_opt, self.precision, loss, self.model,
                                          cfg.grad_clip, world_size=self.world)
        ema_update(self.ema, self.model, cfg.ema_decay)
        self.causal_step += 1
        return {**self._counters(), **row, "lr": self.causal_opt.param_groups[0]["lr"]}

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

    def train_step(self, take: Take) -> dict[str, Any]:
        """One DMD generator step and its critic steps; returns the step's metrics."""
        cfg, row = self.cfg, {}
        batch = self._batch(take)
        update_generator = self.step >= cfg.critic_warmup_steps
        set_lr(self.opt, cfg.lr * lr_factor(self.step, cfg))
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
            row["grad_norm"] = optimiser_step(self.opt, self.precision, loss, self.model,
                                              cfg.grad_clip, world_size=self.world)
            ema_update(self.ema, self.model, cfg.ema_decay)
            row["loss"] = loss.item()
        critic_losses = []
        for c in range(cfg.critic_steps):
            if c:  # further critic steps see fresh rollouts of the updated generator
                batch = self._batch(take)
                x, _ = self._rollout(batch, stream=c, grad=False)
            with self.critic_precision.autocast():
                closs = critic_loss(self.critic, x, batch.text, batch.text_mask, batch.critic)
            row["critic_grad_norm"] = optimiser_step(self.critic_opt, self.critic_precision, closs,
                                                     self.critic, cfg.critic_grad_clip,
                                                     world_size=self.world)
            critic_losses.append(closs.item())
        if critic_losses:
            row["critic_loss"] = sum(critic_losses) / len(critic_losses)
        self.step += 1
        return {**self._counters(), **row, "lr": self.opt.param_groups[0]["lr"]}

    def checkpoint_stage(self) -> str:
        # a checkpoint before the first DMD step holds the causal phase's model
        return "causal" if self.cfg.causal_steps and self.step == 0 else "ar"

    def checkpoint_parts(self) -> Parts:
        state = {**self._counters(), "real_score": self.real_score.name,
                 "init": self.source.describe(),
                 "grad_scalers": {"generator": self.precision.state_dict(),
                                  "critic": self.critic_precision.state_dict()}}
        return Parts(self.model, self.ema, self.opt, state,
                     modules={"critic": self.critic, "real": self.real},
                     optimizers={"critic_optim": self.critic_opt, "causal_optim": self.causal_opt})


def build_ar(config: ARConfig, out_url: str, *, init_url: str, cache_url: str, rank: int = 0,
             world_size: int = 1) -> ARTrainer:
    return ARTrainer(init_url, cache_url, out_url, config, rank=rank, world_size=world_size)


def _total_steps(config: ARConfig) -> int:
    return config.causal_steps + config.steps  # checkpoints count both phases


def _trained_dropout(state: dict[str, Any]) -> float:
    """The unconditional mode of a stage-2 model comes from its causal phase's conditioning
    dropout when it had a causal phase (which retrains the model causally), else from the KD
    model it started from (DMD trains the conditional mode only)."""
    config = state.get("config", {})
    if config.get("causal_steps", 0):
        return float(config.get("cond_dropout", 0.0))
    return float(state.get("init", {}).get("cond_dropout", 0.0))


# Its "causal" checkpoints (before the first DMD step) are sampled whole, like KD; "ar" ones
# stream, committing chunks at the trained context_sigma.
AR_STAGE = TrainingStage(name="ar", title="S2DiT-AR", config=ARConfig, build=build_ar,
                         inputs=("init_url", "cache_url"), checkpoints=ARTrainer.RESUMES,
                         streams=("ar",), context_sigma=configured_context,
                         total_steps=_total_steps, cond_dropout=_trained_dropout)
