"""Typed configuration of a cache-generation job: TOML file, then flags; unknown keys refused.

``[job]`` holds what the job does (corpus, cache, video size, recording, Ray); ``[job.teacher]``
is the teacher's own typed section, chosen by its ``kind`` from the teacher registry
(teachers/registry.py). ``--teacher SPEC`` and every teacher flag override that section.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cache_schema import parse_keep_steps
from cache_schema.bounds import text_problem
from cache_schema.codecs import codec_names
from cache_schema.config_file import load_table, load_toml
from cache_schema.encodings import encoding_names, get_encoding
from cache_schema.store import absolute_url
from cache_schema.typed_config import INT64, ConfigError, Limits, between, check_config, one_of

from .gpus import gpu_type
from .teachers.registry import make_settings, spec_values
from .teachers.spec import TeacherSettings, VideoSize
from .teachers.video_limits import MAX_FRAMES, MAX_SIDE


def _default_teacher() -> TeacherSettings:
    return make_settings({"kind": "analytic"})


@dataclass(kw_only=True, slots=True)
class JobConfig:
    TABLE: ClassVar[str] = "job"
    # Ranges (cache_schema.typed_config): generous for a real cluster, tight enough that a typo
    # (an extra zero, a sign) is refused at load instead of growing memory or looping.
    LIMITS: ClassVar[Limits] = {
        "samples_per_shard": between(1, 1_000_000), "height": between(1, MAX_SIDE),
        "width": between(1, MAX_SIDE), "frames": between(1, MAX_FRAMES), "seed": INT64,
        "seeds_per_prompt": between(1, 1_000_000), "half_dtype": one_of("float16", "bfloat16"),
        "num_actors": between(1, 100_000), "num_gpus_per_actor": between(0.0, 64.0),
        "num_cpus_per_actor": between(0.0, 1024.0), "gpu_memory_gb": between(0.0, 1e6, lo_open=True),
        "placement_timeout_s": between(0.0, 7 * 86400.0, lo_open=True),
        "load_timeout_s": between(0.0, 7 * 86400.0, lo_open=True),
        "stall_timeout_s": between(0.0, 30 * 86400.0, lo_open=True),
        "stall_after_s": between(0.0, 30 * 86400.0, lo_open=True),
        "max_init_failures": between(1, 1000), "max_gpu_hours": between(0.0, 1e9, lo_open=True),
        "max_retries": between(0, 1000), "commit_every": between(1, 1_000_000),
    }

    teacher: TeacherSettings = field(default_factory=_default_teacher)  # or a --teacher spec
    prompts: str = ""  # corpus URL: .txt, .jsonl or .parquet
    output: str = ""  # cache URL
    encoding: str = "wds"
    codec: str = "raw"  # value codec of the tensors: raw | zstd | trajectory (zarr for the last two)
    # None: chosen by the plan (sizing.py): at most 15 GPU-minutes a unit on a job with a GPU
    # cost estimate ([job] gpu), else 64 samples
    samples_per_shard: int | None = None
    height: int = 64
    width: int = 64
    frames: int = 17
    keep_steps: str = "all"
    seed: int = 0  # global seed: noise = f(seed, sample_id)
    seeds_per_prompt: int = 1  # a txt line yields this many trajectories (seed 0..n-1)
    half_dtype: str = "float16"
    device: str = "cpu"
    num_actors: int = 1
    num_gpus_per_actor: float = 0.0
    num_cpus_per_actor: float = 1.0
    gpu_memory_gb: float = 80.0  # per GPU; generate refuses a memory plan above it
    # GPU type of the job's nodes (teacher_jobs/gpus.py; the product infra/kuberay selects): the
    # cost estimate's seconds per sample and the plan's unit size follow it. None: not sized.
    gpu: str | None = None
    # An actor is first placed (a node with its resources exists: the autoscaler may be adding
    # one), then loads its teacher (a cold A14B download and hash takes tens of minutes): two
    # phases with two bounds. An actor not placed in time is dropped while others work, and
    # ends the job when none does.
    placement_timeout_s: float = 600.0
    load_timeout_s: float = 3600.0  # from placement to a loaded, fingerprint-checked teacher
    # The job ends with an error when nothing happens for this long (no sample done, no unit
    # finished, no actor placed or loaded; loading actors are bounded by load_timeout_s
    # instead): above the time of one micro-batch, which is when actors report progress.
    stall_timeout_s: float = 3600.0
    # The stall alert (monitor.py): one warning line, the status file and a Ray metric when no
    # shard finished for this long; the job goes on. None: 5x the median measured shard time,
    # at least 600 s.
    stall_after_s: float | None = None
    max_init_failures: int = 3  # teacher loads failing in a row before the job stops (each a new load)
    # Budget cap over all runs of this output: GPU-hours (GPUs x wall time since placement;
    # actor-hours on a CPU job). Reached: the job commits what is done and stops; rerun with a
    # larger cap to resume.
    max_gpu_hours: float | None = None
    max_retries: int = 2  # per unit, after the first attempt
    # units between intermediate generations (partial progress usable); None: chosen by the plan
    # (a commit about every 15 minutes of a GPU job with a cost estimate, else 8)
    commit_every: int | None = None
    ray_address: str | None = None  # None: embedded local runtime; "auto" inside `ray job submit`

    def __post_init__(self) -> None:
        if isinstance(self.teacher, str):
            self.teacher = make_settings(spec_values(self.teacher), where="--teacher")
        elif isinstance(self.teacher, dict):
            self.teacher = make_settings(self.teacher)
        check_config(self)  # types and ranges first: the checks below compare freely
        # local paths absolute: the teacher actors (Ray) read and write them from other folders
        self.prompts, self.output = absolute_url(self.prompts), absolute_url(self.output)
        if self.encoding not in encoding_names():
            raise ValueError(f"[job] encoding must be one of {', '.join(encoding_names())}, got {self.encoding!r}")
        if self.codec not in codec_names():
            raise ValueError(f"[job] codec must be one of {', '.join(codec_names())}, got {self.codec!r}")
        get_encoding(self.encoding).check_codec(self.codec)  # the encoding owns its rules
        if self.device.startswith("cuda") and self.num_gpus_per_actor <= 0:
            raise ValueError("device = 'cuda' needs num_gpus_per_actor > 0 (Ray places one teacher "
                             "actor per GPU); set num_gpus_per_actor = 1")
        self.teacher.validate_video(self.video)  # the teacher's declared sizes (video_limits.py)
        if self.gpu is not None:
            gpu_type(self.gpu)  # one of the known types, else an error naming them
        parse_keep_steps(self.keep_steps, self.steps, self.teacher.shift)  # fail early on a bad spec
        problem = text_problem("negative_prompt", self.negative_prompt)  # in every record
        if problem:
            raise ValueError(f"[job.teacher] negative_prompt: {problem}")

    @property
    def video(self) -> VideoSize:
        return VideoSize(height=self.height, width=self.width, frames=self.frames)

    @property
    def steps(self) -> int:
        return self.teacher.steps

    @property
    def negative_prompt(self) -> str:
        return self.teacher.negative_prompt

    @property
    def keep_step_indices(self) -> tuple[int, ...]:
        return parse_keep_steps(self.keep_steps, self.steps, self.teacher.shift)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["teacher"] = self.teacher.to_json()
        return out

    @classmethod
    def load(cls, path: str | None = None, *, teacher: dict[str, Any] | None = None,
             **overrides: Any) -> JobConfig:
        """Settings from a TOML file's ``[job]`` (or its flat keys; any fsspec URL), then
        non-None ``overrides``; ``teacher`` holds teacher-section overrides (a ``spec`` key is a
        ``--teacher SPEC``)."""
        data: dict[str, Any] = {}
        if path:  # a regular file of at most 1 MiB; [job] include resolved as `s2dit run` does
            table = load_table(path, cls.TABLE, "job config")
            data = table if table is not None else load_toml(path, "job config")  # flat keys
        return cls.from_table(data, teacher=teacher, where=path or "flags", **overrides)

    @classmethod
    def from_table(cls, data: dict[str, Any], *, teacher: dict[str, Any] | None = None,
                   where: str = "flags", **overrides: Any) -> JobConfig:
        """Settings from a ``[job]`` table (a TOML file's, or a manifest's recorded config), then
        non-None ``overrides`` and ``teacher`` section overrides, as ``load``."""
        data = dict(data)
        section = data.pop("teacher", {"kind": "analytic"})
        if isinstance(section, str):  # teacher = "SPEC" in [job]
            section = spec_values(section)
        if not isinstance(section, dict):
            raise ConfigError(f"[job] teacher = {section!r}: must be a [job.teacher] table or a "
                             "--teacher spec string (e.g. 'analytic', 'wan-tiny')")
        section = dict(section)
        flags = {k: v for k, v in (teacher or {}).items() if v is not None}
        if "spec" in flags:  # --teacher SPEC: another kind or source replaces the section
            spec = spec_values(flags.pop("spec"))
            section = spec if spec["kind"] != section.get("kind", "analytic") else {**section, **spec}
        section.update(flags)
        data.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)} - {"teacher"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown job config keys {unknown} (in {where}); known keys: "
                             f"{', '.join(sorted(known))}; teacher settings go in [job.teacher]")
        return cls(teacher=make_settings(section, where=f"[job.teacher] of {where}"), **data)
