"""The teacher side of sampling a student: the text encoder that made its cache's ``text_emb``
and the way its latents become frames one can watch, chosen by the cache's fingerprint.

- analytic (DESIGN 4.3): the fixed token-embedding table; frames are the latents painted in
  the colours of the teacher's colour words (teacher_jobs.preview.ColourDecoder), and the
  oracle scores the samples.
- Wan 2.2 (DESIGN 4.2): UMT5 text encoder and AutoencoderKLWan, loaded without the experts
  (teacher_jobs.teachers.wan_codec); frames are VAE-decoded chunk by chunk.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from pipeline.eval import analytic_teacher_of
from pipeline.video_io import to_uint8_frames
from teacher_jobs.preview import ColourDecoder, save_latent_preview
from teacher_jobs.teachers.analytic_settings import AnalyticSettings
from teacher_jobs.teachers.base import EncodedText
from teacher_jobs.teachers.wan_settings import WanSettings

ANALYTIC, WAN = AnalyticSettings.kind, WanSettings.kind  # fingerprint["teacher"]: registry keys


class TextEncoder(Protocol):
    max_text_len: int

    def count_tokens(self, prompt: str) -> int: ...

    def encode_prompts(self, prompts: list[str]) -> EncodedText: ...


class Renderer(Protocol):
    """Latent chunks in (``push``, in frame order), uint8 frames (B, n, H, W, 3) out."""

    mode: str  # "chunk by chunk" or "whole clip"

    def push(self, latents: torch.Tensor) -> np.ndarray | None: ...

    def finish(self) -> np.ndarray | None: ...


class _ColourRenderer:
    """Each latent chunk painted in the teacher's colours as soon as it is pushed (no range
    set by the whole clip: a pixel's colour is its own projection on the colour patterns)."""

    mode = "colour decoder, chunk by chunk"

    def __init__(self, decoder: ColourDecoder):
        self.decoder = decoder

    def push(self, latents: torch.Tensor) -> np.ndarray:
        return self.decoder.decode(latents.float().cpu().numpy())

    def finish(self) -> None:
        return None


class _WanRenderer:
    def __init__(self, decoder):
        self.decoder = decoder
        self.mode = "chunk by chunk" if decoder.streams else "whole clip"

    def push(self, latents: torch.Tensor) -> np.ndarray | None:
        video = self.decoder.push(latents)
        return None if video is None else to_uint8_frames(video)

    def finish(self) -> np.ndarray | None:
        video = self.decoder.finish()
        return None if video is None else to_uint8_frames(video)


class AnalyticSide:
    kind, fps = ANALYTIC, 4.0  # one latent frame is one picture: a slow default

    def __init__(self, fingerprint: dict[str, Any]):
        self.teacher = analytic_teacher_of(fingerprint)
        self.text: TextEncoder = self.teacher
        self.decoder = ColourDecoder.of_teacher(self.teacher)  # 16x blocks: even sizes for H.264

    def frame_count(self, latent_frames: int) -> int:
        return latent_frames

    def renderer(self, height: int, width: int) -> Renderer:
        del height, width  # every latent pixel becomes a decoder.scale block
        return _ColourRenderer(self.decoder)

    def save_preview(self, x0: np.ndarray, path: str) -> str:
        """A PNG frame strip of (N, C, F, H, W) latents in the teacher's colours."""
        return save_latent_preview(x0, path, self.decoder)

    def scores(self, x0: np.ndarray, prompts: list[str]) -> dict[str, float]:
        return self.teacher.score(x0, prompts)

    def describe(self) -> dict[str, Any]:
        return {"teacher": ANALYTIC}


class WanSide:
    kind, fps = WAN, 16.0  # Wan 2.2 T2V's frame rate

    def __init__(self, fingerprint: dict[str, Any], *, source: str | None, device: str,
                 dtype: str):
        from teacher_jobs.teachers.wan_codec import WanCodec

        self.codec = WanCodec.for_cache(fingerprint, source=source, device=device, vae_dtype=dtype)
        self.text: TextEncoder = self.codec
        self.vae_dtype = dtype

    def frame_count(self, latent_frames: int) -> int:
        return (latent_frames - 1) * self.codec.vae_scale[0] + 1

    def renderer(self, height: int, width: int) -> Renderer:
        del height, width  # the VAE sets the frame size (x8)
        return _WanRenderer(self.codec.stream_decoder())

    def scores(self, x0: np.ndarray, prompts: list[str]) -> None:
        return None  # no oracle for a real teacher

    def describe(self) -> dict[str, Any]:
        return {"teacher": WAN, "source": self.codec.source, "vae_dtype": self.vae_dtype,
                "text_dtype": str(self.codec.text_dtype).removeprefix("torch.")}


TeacherSide = AnalyticSide | WanSide


def open_teacher_side(fingerprint: dict[str, Any], *, source: str | None = None,
                      device: str = "cpu", dtype: str = "float32") -> TeacherSide:
    """The side of the teacher that made a cache; ``source`` relocates Wan weights."""
    teacher = fingerprint.get("teacher")
    if teacher == ANALYTIC:
        if source:
            raise ValueError("--teacher-source is for Wan caches; this cache's teacher is analytic")
        return AnalyticSide(fingerprint)
    if teacher == WAN:
        return WanSide(fingerprint, source=source, device=device, dtype=dtype)
    raise ValueError(f"cannot sample for a cache made by teacher {teacher!r}: text encoders and "
                     f"decoders are known for {ANALYTIC!r} and {WAN!r}")
