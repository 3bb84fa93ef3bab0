"""Wan 2.2's sampling side (DESIGN 4.2): the UMT5 text encoder and AutoencoderKLWan, loaded
without the experts (wan_encoders.py); frames are VAE-decoded chunk by chunk. No oracle."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .sampling import Renderer, SamplingSide


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """(B, 3, F, H, W) in [-1, 1] -> (B, F, H, W, 3) uint8, rounded as diffusers' video
    post-processing does."""
    unit = (video.float() / 2 + 0.5).clamp(0, 1)
    return (unit.permute(0, 2, 3, 4, 1).cpu().numpy() * 255).round().astype(np.uint8)


class VaeRenderer:
    def __init__(self, decoder):
        self.decoder = decoder
        self.mode = "chunk by chunk" if decoder.streams else "whole clip"

    def push(self, latents: torch.Tensor) -> np.ndarray | None:
        video = self.decoder.push(latents)
        return None if video is None else to_uint8_frames(video)

    def finish(self) -> np.ndarray | None:
        video = self.decoder.finish()
        return None if video is None else to_uint8_frames(video)


class WanSamplingSide(SamplingSide):
    fps = 16.0  # Wan 2.2 T2V's frame rate

    def __init__(self, kind: str, fingerprint: dict[str, Any], *, source: str | None,
                 device: str, dtype: str):
        from .wan_encoders import WanEncoders

        self.kind = kind
        self.encoders = WanEncoders.for_cache(fingerprint, source=source, device=device, vae_dtype=dtype)
        self.text = self.encoders
        self.vae_dtype = dtype

    def renderer(self, height: int, width: int) -> Renderer:
        del height, width  # the VAE sets the frame size (x8)
        return VaeRenderer(self.encoders.stream_decoder())

    def describe(self) -> dict[str, Any]:
        return {"teacher": self.kind, "source": self.encoders.source, "vae_dtype": self.vae_dtype,
                "text_dtype": str(self.encoders.text_dtype).removeprefix("torch.")}
