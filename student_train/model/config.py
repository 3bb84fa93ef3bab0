"""Typed configuration of the S2DiT student; saved as JSON next to the weights."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

BLOCK_KINDS = ("lcha", "ssa")


def parse_block(spec: str) -> tuple[str, int]:
    """``lcha`` -> ("lcha", 1); ``ssa:2`` -> ("ssa", 2) (spatial stride of Q, K, V)."""
    kind, _, stride = spec.partition(":")
    if kind not in BLOCK_KINDS:
        raise ValueError(f"unknown block kind {spec!r}: use lcha or ssa:<stride>")
    return kind, int(stride or 1)


@dataclass(kw_only=True, slots=True)
class StudentConfig:
    latent_channels: int = 4
    latent_frames: int = 5
    latent_height: int = 8
    latent_width: int = 8
    patch: tuple[int, int, int] = (1, 2, 2)  # (frames, rows, cols) per token
    dim: int = 96
    heads: int = 4
    mlp_ratio: float = 2.0
    text_dim: int = 32
    # The sandwich: high-resolution LCHA slices around low-resolution SSA filling.
    layout: tuple[str, ...] = ("lcha", "ssa:2", "ssa:2", "lcha")
    chunk_frames: int = 1  # latent frames per streaming chunk
    ssa_window: int | None = None  # past chunks an SSA block keeps in its KV cache (None: all)
    conv_kernel: tuple[int, int, int] = (3, 3, 3)

    def __post_init__(self) -> None:
        self.patch = tuple(self.patch)
        self.layout = tuple(self.layout)
        self.conv_kernel = tuple(self.conv_kernel)
        for spec in self.layout:
            parse_block(spec)
        if self.dim % self.heads or self.dim // self.heads < 6:
            raise ValueError(f"dim must split into heads of >= 6 channels for 3D RoPE "
                             f"(got dim {self.dim}, heads {self.heads})")
        pf, ph, pw = self.patch
        if self.latent_frames % pf or self.latent_height % ph or self.latent_width % pw:
            raise ValueError(f"latent {self.latent_frames}x{self.latent_height}x{self.latent_width} "
                             f"is not divisible by patch {self.patch}")

    @property
    def grid(self) -> tuple[int, int, int]:
        pf, ph, pw = self.patch
        return self.latent_frames // pf, self.latent_height // ph, self.latent_width // pw

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "StudentConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown student config keys {sorted(unknown)}")
        return cls(**data)
