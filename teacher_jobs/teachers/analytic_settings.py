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
from .video_limits import MAX_FRAMES, MAX_SIDE, SizeGrid, VideoLimits

# The means of every class and mode are built in the driver and in each actor: a size whose
# means exceed this is refused instead of exhausting memory (a 64x64x57 memory task: 10 MB).
MEANS_BUDGET = 2 << 30


def _budget_cap(top: int, config_max: int) -> dict:
    """``hi`` of a size grid: the means budget's bound, or [job]'s range when that is lower."""
    if top < config_max:
        return {"hi": top, "why_hi": f"mixture means within {MEANS_BUDGET >> 30} GiB"}
    return {"hi": config_max}


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

    def video_limits(self, video: VideoSize) -> VideoLimits:
        """Latents are pixels / 8 and frames / 4 (4k+1); an object is 3x3 latent pixels; the
        memory task needs the object to reappear, causal pairs one whole chunk; the mixture
        means (every class and mode, float64) fit MEANS_BUDGET given the other two sizes."""
        rows, cols, frames = (max(1, video.height // 8), max(1, video.width // 8),
                              max(1, (video.frames - 1) // 4 + 1))
        per = self._means_bytes_per_latent_element()
        side = {"step": 8, "lo": 24, "why_step": "latent pixels of 8", "why_lo": "a 3x3 latent object"}
        need, why = 1, ""
        if self.task == "memory":
            need, why = self.visible_frames + self.gap_frames + 1, (
                "the object must reappear after visible_frames + gap_frames = "
                f"{self.visible_frames + self.gap_frames} latent frames")
        if self.causal_chunk_frames > need:
            need, why = self.causal_chunk_frames, (
                f"causal_chunk_frames = {self.causal_chunk_frames} latent frames in one chunk")
        return VideoLimits(
            teacher=f"the analytic teacher ({self.task} task)",
            height=SizeGrid(**side, **_budget_cap(8 * (MEANS_BUDGET // (per * frames * cols)), MAX_SIDE)),
            width=SizeGrid(**side, **_budget_cap(8 * (MEANS_BUDGET // (per * frames * rows)), MAX_SIDE)),
            frames=SizeGrid(step=4, offset=1, lo=4 * (need - 1) + 1, why_step="latent frames of 4",
                            why_lo=why, **_budget_cap(4 * (MEANS_BUDGET // (per * rows * cols)) - 3,
                                                      MAX_FRAMES)))

    def _means_bytes_per_latent_element(self) -> int:
        """AnalyticTeacher.means: (classes, modes, C*F*H*W) float64, per latent (F, H, W) element."""
        defaults = AnalyticConfig()
        classes = len(defaults.objects) * len(defaults.colours) * len(defaults.motions)
        modes = self.modes_per_class * (2 * self.identity_codes if self.task == "memory" else 1)
        return classes * modes * self.latent_channels * 8

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
