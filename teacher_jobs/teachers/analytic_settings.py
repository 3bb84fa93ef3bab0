"""``[job.teacher] kind = "analytic"``: the Gaussian-mixture oracle of DESIGN 4.3.

It has no weights, so the driver builds it to fingerprint (a few kB of procedural means).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from cache_schema.typed_config import Limits, between

from .analytic import AnalyticConfig, AnalyticTeacher
from .registry import register_teacher
from .spec import DriverPlan, TeacherSettings, VideoSize


@register_teacher
@dataclass(kw_only=True, slots=True)
class AnalyticSettings(TeacherSettings):
    kind: ClassVar[str] = "analytic"
    has_oracle: ClassVar[bool] = True
    causal_pairs: ClassVar[bool] = True  # the exact autoregressive teacher (analytic_causal.py)
    LIMITS: ClassVar[Limits] = {"latent_channels": between(1, 4096), "modes_per_class": between(1, 64),
                                "identity_codes": between(1, 64), "visible_frames": between(1, 4096),
                                "gap_frames": between(2, 4096)}
    latent_channels: int = 4  # latent (C, (frames-1)/4+1, height/8, width/8)
    task: str = "motion"  # "memory": identity across a gap and a bounce (analytic_tasks.py)
    modes_per_class: int = 3  # start positions (shared by all classes)
    identity_codes: int = 3  # memory task
    visible_frames: int = 3  # memory task: latent frames the object is seen per period
    gap_frames: int = 9  # memory task: blank latent frames between sightings

    def validate_video(self, video: VideoSize) -> None:
        if video.height % 8 or video.width % 8 or (video.frames - 1) % 4:
            raise ValueError(f"the analytic teacher maps pixels to latents by 8 and frames by 4: "
                             f"height/width must be multiples of 8 and frames 4k+1 (got "
                             f"{video.height}x{video.width}, {video.frames} frames)")
        latent_frames = (video.frames - 1) // 4 + 1
        if self.causal_chunk_frames > latent_frames:
            raise ValueError(f"[job.teacher] causal_chunk_frames = {self.causal_chunk_frames} is "
                             f"more than the clip's {latent_frames} latent frames")

    def config(self, video: VideoSize, device: str = "cpu") -> AnalyticConfig:
        shape = (self.latent_channels, (video.frames - 1) // 4 + 1, video.height // 8, video.width // 8)
        return AnalyticConfig(latent_shape=shape, num_steps=self.steps, shift=self.shift,
                              guidance=self.guidance, device=device, task=self.task,
                              modes_per_class=self.modes_per_class, identity_codes=self.identity_codes,
                              visible_frames=self.visible_frames, gap_frames=self.gap_frames)

    def build(self, video: VideoSize, *, device: str) -> AnalyticTeacher:
        return AnalyticTeacher(self.config(video, device),
                               causal_chunk_frames=self.causal_chunk_frames)

    def driver_plan(self, video: VideoSize) -> DriverPlan:
        teacher = self.build(video, device="cpu")
        return DriverPlan(fingerprint=teacher.fingerprint(),
                          layout_args={"latent_shape": teacher.latent_shape, "num_steps": teacher.num_steps,
                                           "text_dim": teacher.text_dim, "max_text_len": teacher.max_text_len},
                          max_tokens=teacher.max_text_len, count_tokens=teacher.count_tokens)

    @classmethod
    def sampling_side(cls, fingerprint: dict[str, Any], *, source: str | None = None,
                      device: str = "cpu", dtype: str = "float32"):
        if source:
            raise ValueError("--teacher-source is for Wan caches; this cache's teacher is analytic")
        from .analytic_sampling import AnalyticSamplingSide

        return AnalyticSamplingSide(cls.kind, fingerprint)

    @classmethod
    def build_direct(cls, values: dict[str, Any], **config: Any) -> AnalyticTeacher:
        chunk = config.pop("causal_chunk_frames", 0)  # a recording setting, not the distribution
        return AnalyticTeacher(AnalyticConfig(**config), causal_chunk_frames=chunk)
