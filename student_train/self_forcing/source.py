"""The S2DiT-KD checkpoint stage 2 starts from: its EMA weights, model config and few-step plan,
and the checks that it fits the cache self-forcing trains on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cache_schema import CacheLayout, FingerprintMismatch

from ..checkpoint import (
    checkpoint_stage,
    latest_checkpoint,
    load_checkpoint,
    model_config,
    split_prefix,
)
from ..model import S2DiT, StudentConfig


@dataclass
class KDSource:
    url: str  # the checkpoint folder (checkpoints/step_N)
    step: int
    model_config: StudentConfig
    weights: dict[str, torch.Tensor]  # the EMA weights
    plan: dict[str, Any]  # the KD run's schedule (schedule_sigmas: the few-step jumps + 0)
    manifest: dict[str, Any]  # the cache the KD model was distilled from
    cond_dropout: float = 0.0  # the KD run's conditioning dropout (0: no unconditional mode)

    def describe(self) -> dict[str, Any]:
        """What an AR checkpoint records about where it came from (the KD run's conditioning
        dropout only when it had one: older records stay as they were)."""
        out = {"checkpoint": self.url, "step": self.step, "manifest": self.manifest}
        if self.cond_dropout:
            out["cond_dropout"] = self.cond_dropout
        return out


def load_kd_source(url: str) -> KDSource:
    """A KD checkpoint folder, or a KD training output URL (its newest checkpoint)."""
    folder = latest_checkpoint(url) or url

    def expect(state: dict[str, Any]) -> dict[str, torch.nn.Module]:
        stage = checkpoint_stage(state)  # "kd" also for stage-1 checkpoints without the key
        if stage != "kd":
            kind = "an S2DiT-AR (stage 2)" if stage == "ar" else f"a stage-2 {stage!r}"
            raise ValueError(f"{folder} is {kind} checkpoint; --init takes the S2DiT-KD "
                             "checkpoint (stage 1) to start self-forcing from")
        missing = [k for k in ("model_config", "plan", "manifest") if k not in state]
        if missing:
            raise ValueError(f"{folder} is not an S2DiT-KD training checkpoint (no {missing} in "
                             "its state)")
        with torch.device("meta"):  # shapes and dtypes only: nothing allocated
            return {"ema": S2DiT(model_config(state, folder))}

    tensors, state = load_checkpoint(folder, expect, fix="the file does not hold the model its "
                                                         "state.json describes")
    weights = split_prefix(tensors, "ema")
    if not weights:
        raise ValueError(f"{folder} holds no EMA weights (ema.*)")
    return KDSource(url=folder, step=int(state["step"]),
                    model_config=StudentConfig.from_json(state["model_config"]), weights=weights,
                    plan=state["plan"], manifest=state["manifest"],
                    cond_dropout=float(state.get("config", {}).get("cond_dropout", 0.0)))


def check_fits(source: KDSource, layout: CacheLayout, fingerprint_digest: str, cache_url: str,
               teacher_digest: str | None = None) -> None:
    """Refuse a KD model that cannot read this cache's latents and text, or that was distilled
    from another teacher setup (its real score would describe another distribution).
    teacher_digest: the cache's fingerprint without recording-only keys (its causal pairs): a KD
    model distilled from the same teacher's cache without pairs fits it."""
    c, f, h, w = layout.latent_shape
    cfg = source.model_config
    wanted = {"latent_channels": c, "latent_frames": f, "latent_height": h, "latent_width": w,
              "text_dim": layout.text_dim}
    clash = {k: (getattr(cfg, k), v) for k, v in wanted.items() if getattr(cfg, k) != v}
    if clash:
        got = ", ".join(f"{k} {a} (cache {b})" for k, (a, b) in clash.items())
        raise ValueError(f"the KD checkpoint {source.url} does not fit the cache {cache_url}: its "
                         f"model was built for {got}. Initialise from a KD checkpoint trained on "
                         "this teacher's latents, or point --cache at its cache")
    kd_digest = source.manifest.get("fingerprint_digest")
    if kd_digest and kd_digest not in (fingerprint_digest, teacher_digest):
        raise FingerprintMismatch(
            f"the KD checkpoint {source.url} was distilled from a cache with fingerprint "
            f"{kd_digest[:16]}, the cache {cache_url} has {fingerprint_digest[:16]}: its real score "
            "and the cached x0 would come from different teachers; use a cache of the same teacher")
