"""A trained student as its checkpoint describes it: EMA model, plan, stage, context sigma and
the cache generation it trained on, sampled as its stage says (whole clip, or chunk by chunk).

Whoever samples a student (text to video, the report, evaluation) loads a ``StudentCheckpoint``
and asks it; the stage's spec (stages.py) answers what a stage name implies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import fsspec
import torch

from cache_schema import CacheError, Manifest, load_manifest, split_ref

from .checkpoint import (
    checkpoint_stage,
    latest_checkpoint,
    load_checkpoint,
    model_config,
    split_prefix,
)
from .guidance import NullText, check_guidance
from .model import S2DiT
from .model.bounded import long_stream
from .sampler import sample, sample_streaming, stream_chunks
from .stage_spec import TrainingStage
from .stages import stage_of_checkpoint

SAMPLING = "sampling.json"  # beside an exported folder's config.json and model.safetensors


@dataclass
class StudentCheckpoint:
    url: str  # the checkpoints/step_N folder
    model: S2DiT  # eval mode; the EMA weights unless loaded with ema=False
    state: dict[str, Any]  # its state.json
    spec: TrainingStage  # the stage that wrote it

    @classmethod
    def load(cls, url: str, *, ema: bool = True) -> StudentCheckpoint:
        """A checkpoints/step_N folder, or a training output URL (its newest checkpoint)."""
        url = latest_checkpoint(url) or url
        prefix, built = "ema" if ema else "model", []

        def expect(state: dict[str, Any]) -> dict[str, torch.nn.Module]:
            built.append(S2DiT(model_config(state, url)))
            return {prefix: built[0]}

        tensors, state = load_checkpoint(url, expect, fix="the file does not hold the model its "
                                                          "state.json describes (altered or not "
                                                          "an s2dit checkpoint)")
        model = built[0]
        model.load_state_dict(split_prefix(tensors, prefix))  # checked: names, shapes, dtypes
        return cls(url=url, model=model.eval(), state=state, spec=stage_of_checkpoint(state))

    def long_stream(self, *, ssa_window: int | str | None = None, sink: str = "first",
                    lcha_window: int | str | None = None) -> StudentCheckpoint:
        """This student for streams longer than its trained clip (model/bounded.py long_stream:
        SSA bounded, LCHA's sums windowed; None: as trained)."""
        model = long_stream(self.model, ssa_window=ssa_window, sink=sink, lcha_window=lcha_window)
        return self if model is self.model else replace(self, model=model)

    @property
    def stage(self) -> str:
        """The stage name the checkpoint carries (one of ``spec.checkpoints``)."""
        return checkpoint_stage(self.state)

    @property
    def step(self) -> int:
        return int(self.state["step"])

    @property
    def plan(self) -> dict[str, Any]:
        """The few-step schedule (``schedule_sigmas``) and the full grid (``grid_sigmas``)."""
        return self.state["plan"]

    @property
    def streams(self) -> bool:
        """Whether its stage is sampled chunk by chunk unless a caller says otherwise."""
        return self.stage in self.spec.streams

    @property
    def context_sigma(self) -> float:
        """The noise level finished chunks are committed at when it streams (as trained)."""
        return self.spec.context_sigma(self.state.get("config", {}))

    @property
    def manifest_info(self) -> dict[str, Any]:
        """cache_url, cache_id, generation and fingerprint_digest of the cache it trained on."""
        return self.state["manifest"]

    @property
    def cond_dropout(self) -> float:
        """The conditioning dropout its model was trained with (its stage says how to read
        it): 0 means no unconditional mode, so no classifier-free guidance."""
        return self.spec.cond_dropout(self.state)

    def check_guidance(self, guidance: float) -> None:
        """Refuse guidance != 1 for a checkpoint trained without conditioning dropout."""
        check_guidance(guidance, self.cond_dropout, f"the checkpoint {self.url}")

    def trained_manifest(self) -> Manifest:
        """The manifest generation it trained on (not whatever a tag names now)."""
        info = self.manifest_info
        url = f"{split_ref(info['cache_url'])[0]}@{info['generation']}"
        try:
            manifest = load_manifest(url)
        except (FileNotFoundError, CacheError) as exc:
            raise FileNotFoundError(f"cannot read {url}, the cache generation this checkpoint "
                                    f"trained on: {exc}") from None
        if manifest is None or manifest.cache_id != info["cache_id"]:
            raise ValueError(f"{url} is not the cache this checkpoint trained on (cache id "
                             f"{info['cache_id']}); it was moved or replaced")
        return manifest

    def sampling(self) -> dict[str, Any]:
        """What sampling it as trained needs besides the weights (``SAMPLING`` of an export)."""
        return {"stage": self.stage, "model": self.spec.title, "step": self.step,
                "streams": self.streams, "context_sigma": self.context_sigma,
                "few_step_sigmas": self.plan.get("schedule_sigmas"), "plan": self.plan,
                "trained_on": self.manifest_info, "checkpoint": self.url}

    def save_pretrained(self, url: str) -> None:
        """A folder others load without s2dit's training code: ``config.json`` +
        ``model.safetensors`` (the model's own, ``S2DiT.from_pretrained(url)``) and
        ``SAMPLING`` (stage, few-step sigmas, streaming, context sigma, the cache it trained on)."""
        self.model.save_pretrained(url)
        fs, root = fsspec.core.url_to_fs(url)
        fs.pipe_file(f"{root}/{SAMPLING}", json.dumps(self.sampling(), indent=1).encode())

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> StudentCheckpoint:
        self.model = self.model.to(device, dtype)
        return self

    def chunks(self, noise: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
               sigmas: list[float], *, streaming: bool | None = None, use_step_size: bool = True,
               chunk_frames: int | None = None, guidance: float = 1.0,
               null: NullText | None = None, forced: torch.Tensor | None = None
               ) -> Iterator[torch.Tensor]:
        """Finished latents as they come, (B, C, f, H, W) each: chunk by chunk when streaming
        (default: as its stage samples), else the whole clip sampled at once, one frame each.
        ``guidance`` != 1 with the ``null`` text: classifier-free guidance (guidance.py);
        ``forced``: the first frames given, not sampled (streaming only, as in ``sample``)."""
        self.check_guidance(guidance)
        if self.streams if streaming is None else streaming:
            return stream_chunks(self.model, noise, text, text_mask, sigmas, chunk_frames,
                                 use_step_size=use_step_size, context_sigma=self.context_sigma,
                                 forced=forced, guidance=guidance, null=null)
        if forced is not None:
            raise ValueError("forced frames need streaming: the whole clip sampled at once has no "
                             "context to commit them to")
        x0 = sample(self.model, noise, text, text_mask, sigmas, use_step_size=use_step_size,
                    guidance=guidance, null=null)
        return iter(x0.split(1, dim=2))

    def sample(self, noise: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
               sigmas: list[float], *, streaming: bool | None = None, use_step_size: bool = True,
               chunk_frames: int | None = None, forced: torch.Tensor | None = None,
               guidance: float = 1.0, null: NullText | None = None) -> torch.Tensor:
        """The whole (B, C, F, H, W) clip, sampled as ``chunks`` says; ``forced``: the first
        frames given, not sampled (teacher forcing, streaming only: ``sample_streaming``);
        ``guidance`` != 1 with the ``null`` text: classifier-free guidance (guidance.py)."""
        self.check_guidance(guidance)
        if self.streams if streaming is None else streaming:
            return sample_streaming(self.model, noise, text, text_mask, sigmas, chunk_frames,
                                    use_step_size=use_step_size, context_sigma=self.context_sigma,
                                    forced=forced, guidance=guidance, null=null)
        if forced is not None:
            raise ValueError("forced frames need streaming: the whole clip sampled at once has no "
                             "context to commit them to")
        return sample(self.model, noise, text, text_mask, sigmas, use_step_size=use_step_size,
                      guidance=guidance, null=null)
