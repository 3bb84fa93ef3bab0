"""Typed configuration of a cache-generation job: TOML file, then flags; unknown keys refused."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from typing import Any

import fsspec

from cache_schema import parse_keep_steps


@dataclass(kw_only=True, slots=True)
class JobConfig:
    teacher: str = "analytic"  # analytic | wan-tiny | wan:<dir-or-hub-id>
    prompts: str = ""  # corpus URL: .txt, .jsonl or .parquet
    output: str = ""  # cache URL
    encoding: str = "wds"
    samples_per_shard: int = 64
    steps: int = 24
    shift: float = 3.0
    guidance: tuple[float, float] = (3.0, 3.0)  # (high-noise expert, low-noise expert)
    height: int = 64
    width: int = 64
    frames: int = 17
    keep_steps: str = "all"
    seed: int = 0  # global seed: noise = f(seed, sample_id)
    seeds_per_prompt: int = 1  # a txt line yields this many trajectories (seed 0..n-1)
    negative_prompt: str = ""
    half_dtype: str = "float16"
    device: str = "cpu"
    num_actors: int = 1
    num_gpus_per_actor: float = 0.0
    num_cpus_per_actor: float = 1.0
    max_retries: int = 2  # per unit, after the first attempt
    commit_every: int = 8  # units between intermediate generations (partial progress usable)
    ray_address: str | None = None  # None: embedded local runtime; "auto" inside `ray job submit`
    storage_profile: str | None = None

    def __post_init__(self) -> None:
        self.guidance = tuple(float(g) for g in (self.guidance if isinstance(self.guidance, (list, tuple))
                                                 else (self.guidance, self.guidance)))
        if len(self.guidance) == 1:
            self.guidance = (self.guidance[0], self.guidance[0])
        if self.encoding not in ("wds", "zarr"):
            raise ValueError(f"encoding must be wds or zarr, got {self.encoding!r}")
        if self.samples_per_shard < 1 or self.steps < 1 or self.num_actors < 1:
            raise ValueError("samples_per_shard, steps and num_actors must be >= 1")
        if self.height % 16 or self.width % 16:
            raise ValueError(f"height and width must be divisible by 16, got {self.height}x{self.width}")
        if (self.frames - 1) % 4:
            raise ValueError(f"frames must be 4k+1 (the VAE compresses time by 4), got {self.frames}")
        parse_keep_steps(self.keep_steps, self.steps)  # fail early on a bad spec

    @property
    def keep_step_indices(self) -> tuple[int, ...]:
        return parse_keep_steps(self.keep_steps, self.steps)

    @property
    def latent_frames(self) -> int:
        return (self.frames - 1) // 4 + 1

    def teacher_kwargs(self) -> dict[str, Any]:
        if self.teacher == "analytic":
            return {"latent_shape": (4, self.latent_frames, self.height // 8, self.width // 8),
                    "num_steps": self.steps, "shift": self.shift, "guidance": self.guidance,
                    "device": self.device}
        return {"num_steps": self.steps, "shift": self.shift, "guidance": self.guidance,
                "height": self.height, "width": self.width, "frames": self.frames,
                "device": self.device}

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["guidance"] = list(self.guidance)
        return out

    @classmethod
    def load(cls, path: str | None = None, **overrides: Any) -> "JobConfig":
        """Settings from a TOML file (any fsspec URL), then non-None ``overrides``."""
        data: dict[str, Any] = {}
        if path:
            with fsspec.open(path, "rb") as handle:
                try:
                    data = tomllib.load(handle)
                except tomllib.TOMLDecodeError as exc:
                    raise ValueError(f"config {path} is not valid TOML: {exc}") from exc
            data = data.get("job", data)
        data.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown job config keys {unknown} (in {path or 'flags'}); "
                             f"known keys: {', '.join(sorted(known))}")
        return cls(**data)
