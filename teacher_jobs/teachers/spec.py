"""What every teacher kind supplies: a typed ``[job.teacher]`` section that knows, without
loading any weights, how to fingerprint and lay out the cache its teacher will write (the Ray
driver's side), how to build that teacher where the work runs (the actor's side), and, from a
cache's fingerprint alone, the teacher's sampling side (sampling.py: text encoder, renderer,
oracle or none) that sampling and reporting a student need.

Adding a teacher kind = a file with a subclass of ``TeacherSettings`` + one
``register_teacher`` call (registry.py). Nothing else branches on the kind.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from cache_schema import CacheLayout
from cache_schema.typed_config import Limits, between, check_config

from .base import Teacher

if TYPE_CHECKING:
    from .sampling import SamplingSide
    from .video_limits import VideoLimits


@dataclass(kw_only=True, slots=True, frozen=True)
class VideoSize:
    """The job's video: pixels and frames (a teacher maps them to its latent shape)."""

    height: int
    width: int
    frames: int


@dataclass(kw_only=True, slots=True)
class DriverPlan:
    """What the driver needs before any actor starts; computed without model weights."""

    fingerprint: dict[str, Any]  # the teacher's part of the cache fingerprint
    layout_args: dict[str, Any]  # CacheLayout arguments except keep_steps and half_dtype
    max_tokens: int  # text encoder limit, for corpus validation
    count_tokens: Callable[[str], int]  # tokens of a normalised prompt, as the teacher counts

    def layout(self, keep_steps: tuple[int, ...], half_dtype: str) -> CacheLayout:
        return CacheLayout(**self.layout_args, keep_steps=tuple(keep_steps), half_dtype=half_dtype)


@dataclass(kw_only=True, slots=True)
class TeacherSettings(abc.ABC):
    """Base of the typed teacher sections. Fields every teacher has; kinds add their own and
    may change the defaults."""

    kind: ClassVar[str]  # the registry key: `kind` in [job.teacher] and fingerprint["teacher"]
    # True: the sampling side has an oracle (a known data distribution that scores samples)
    has_oracle: ClassVar[bool] = False
    # True: the teacher can write causal ODE pairs (``causal_chunk_frames``): its
    # autoregressive teacher (a chunk given the clean chunks before it) is at hand.
    causal_pairs: ClassVar[bool] = False
    TABLE: ClassVar[str] = "job.teacher"
    # Ranges (cache_schema.typed_config); a kind's own LIMITS add to these and may override.
    LIMITS: ClassVar[Limits] = {
        "steps": between(1, 10_000), "shift": between(0.0, 1000.0, lo_open=True),
        "guidance": between(0.0, 100.0), "micro_batch": between(0, 1_000_000),
        "causal_chunk_frames": between(0, 4096),
    }
    steps: int = 24
    shift: float = 3.0
    guidance: tuple[float, float] = (3.0, 3.0)  # (high-noise expert, low-noise expert)
    negative_prompt: str = ""
    micro_batch: int = 0  # samples sharing one solver loop; 0: a whole work unit at once
    # > 0: also record causal ODE pairs of chunks of this many latent frames (cache fields
    # causal_states / causal_x0, for stage 2's causal phase); 0: none, the cache as before.
    causal_chunk_frames: int = 0

    def __post_init__(self) -> None:
        g = self.guidance  # one value means both experts: 3.0 or [3.0] -> (3.0, 3.0)
        if isinstance(g, (int, float)) and not isinstance(g, bool):
            self.guidance = (g, g)
        elif isinstance(g, (list, tuple)) and len(g) == 1:
            self.guidance = (g[0], g[0])
        check_config(self)  # types and ranges of every field (the kind's own too)
        self.guidance = tuple(float(x) for x in self.guidance)
        if self.causal_chunk_frames and not self.causal_pairs:
            raise ValueError(
                f"[job.teacher] causal_chunk_frames = {self.causal_chunk_frames}: the {self.kind} "
                "teacher cannot write causal ODE pairs (not supported: its autoregressive teacher "
                "has no closed form; it would need trajectories sampled from the causal phase's "
                "own model). Leave causal_chunk_frames at 0 (stage 2 then uses the cached "
                "bidirectional trajectories), or use the analytic teacher")

    @classmethod
    def from_spec(cls, spec: str) -> dict[str, Any] | None:
        """Section values for a ``--teacher SPEC`` string this kind owns, or None."""
        return {} if spec == cls.kind else None

    @abc.abstractmethod
    def video_limits(self, video: VideoSize) -> VideoLimits:
        """The sizes this teacher can produce (video_limits.py): one grid per key, which may
        depend on this section's settings and on the other two sizes. Loads no weights."""

    def validate_video(self, video: VideoSize) -> None:
        """Refuse a size outside ``video_limits``: one line naming the key, the value, the
        allowed values and the nearest valid one (JobConfig calls it before any work)."""
        self.video_limits(video).check(video)

    @abc.abstractmethod
    def driver_plan(self, video: VideoSize) -> DriverPlan:
        """Fingerprint, layout and token rules, without instantiating a model."""

    @abc.abstractmethod
    def build(self, video: VideoSize, *, device: str) -> Teacher:
        """The teacher itself (in the actor)."""

    def check_loaded(self, teacher: Teacher, fingerprint: dict[str, Any]) -> None:
        """Raise if what ``build`` loaded is not what the driver fingerprinted."""

    def memory_plan(self, video: VideoSize, *, gpu_memory_gb: float) -> Any | None:
        """Per-actor memory and cost plan (kinds with GPU-sized models); None: negligible."""
        return None

    def layout_estimate(self, video: VideoSize) -> dict[str, Any]:
        """CacheLayout arguments except keep_steps and half_dtype, for sizing a job before it
        runs; kinds whose driver plan needs files or the hub estimate without them."""
        return self.driver_plan(video).layout_args

    # -- sampling side (from a cache's fingerprint; no settings instance) -----------------------
    @classmethod
    def sampling_side(cls, fingerprint: dict[str, Any], *, source: str | None = None,
                      device: str = "cpu", dtype: str = "float32") -> SamplingSide:
        """The side of this teacher that sampling a student of its cache needs; ``source``
        relocates weights, ``dtype`` is the decoder's."""
        raise ValueError(f"the {cls.kind} teacher has no sampling side: students of its caches "
                         "cannot be sampled or shown")

    @classmethod
    def build_direct(cls, values: dict[str, Any], **config: Any) -> Teacher:
        """The teacher from ``--teacher SPEC`` values and the teacher class's own keyword
        arguments (tests, benchmarks), without a job."""
        raise ValueError(f"the {cls.kind} teacher is built through its [job.teacher] section only")

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        out = {"kind": self.kind, **asdict(self), "guidance": list(self.guidance)}
        if not self.causal_chunk_frames:  # off: the resolved config of every job before it
            del out["causal_chunk_frames"]
        return out
