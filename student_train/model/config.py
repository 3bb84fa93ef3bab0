"""Typed configuration of the S2DiT student; saved as JSON next to the weights.

Defaults (our choices; the paper's widths and depths are not public) fit the demo latents
(C=4, F=5, H=8, W=8, text_dim=32) and a CPU training budget:
- patch (1, 2, 2): a 4x4 token grid per latent frame (80 tokens per clip). (1, 1, 1) would give
  4x the tokens and 4x the cost of every per-token layer; (1, 2, 2) keeps one token per frame
  per 2x2 latent pixels, like Wan's own patching, and still leaves SSA a grid to stride over.
- dim 64, 4 heads (head_dim 16: 2 RoPE pairs per axis), MLP ratio 2: about 0.34M parameters.
  Training cost is matmul-bound and grows with dim^2 (the per-token layers); a forward +
  backward + AdamW step on a batch of 128 demo clips took about 0.26 s at dim 64 and 0.47 s or
  more at dim 96 (0.73M parameters) on 2 CPU cores (bench/bench_student.py, section 4).
- layout: LCHA top slice, SSA:2 filling, LCHA bottom slice (the sandwich); search/dp.py picks
  layouts for a device budget.
- chunk_frames 1: one latent frame per streaming chunk (the demo has 5 frames).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import fsspec

from cache_schema.config_file import read_config
from cache_schema.typed_config import Limits, between, check_config

# lcha: linear attention || causal conv (the paper's high-resolution mixer); conv and lin: one
# of its two branches alone (ablations and sanity students); ssa:<stride>: stride attention.
BLOCK_KINDS = ("lcha", "conv", "lin", "ssa")
SIZE = between(1, 65_536)  # sizes and widths: an extra zero is refused, not allocated


def parse_block(spec: str) -> tuple[str, int]:
    """``lcha`` -> ("lcha", 1); ``ssa:2`` -> ("ssa", 2) (spatial stride of Q, K, V); ``conv`` and
    ``lin`` -> LCHA's conv or linear-attention branch alone."""
    kind, _, stride = spec.partition(":")
    if kind not in BLOCK_KINDS or (stride and not stride.isdigit()) or (kind != "ssa" and stride):
        raise ValueError(f"unknown block {spec!r}: use 'lcha', 'conv', 'lin' or 'ssa:<stride>' "
                         f"(e.g. ssa:2)")
    value = int(stride or 1)
    if value < 1:
        raise ValueError(f"block {spec!r}: the SSA stride must be >= 1")
    return kind, value


@dataclass(kw_only=True, slots=True)
class StudentConfig:
    TABLE: ClassVar[str] = "train.model"
    LIMITS: ClassVar[Limits] = {
        "latent_channels": SIZE, "latent_frames": SIZE, "latent_height": SIZE, "latent_width": SIZE,
        "patch": between(1, 64), "dim": SIZE, "heads": between(1, 1024),
        "mlp_ratio": between(0.0, 64.0, lo_open=True), "text_dim": SIZE,
        "layout": between(None, None, min_len=1, max_len=1024), "chunk_frames": SIZE,
        "ssa_window": between(0, 1_000_000), "lcha_window": between(0, 1_000_000),
        "conv_kernel": between(1, 63),
        "rope_theta": between(0.0, 1e12, lo_open=True), "freq_dim": SIZE,
    }

    latent_channels: int = 4
    latent_frames: int = 5
    latent_height: int = 8
    latent_width: int = 8
    patch: tuple[int, int, int] = (1, 2, 2)  # (frames, rows, cols) of latent per token
    dim: int = 64
    heads: int = 4
    mlp_ratio: float = 2.0
    text_dim: int = 32
    # The sandwich: high-resolution LCHA slices around low-resolution SSA filling.
    layout: tuple[str, ...] = ("lcha", "ssa:2", "ssa:2", "lcha")
    chunk_frames: int = 1  # latent frames per block-causal / streaming chunk
    # Chunks SSA attends to on each side (None: all; set for mobile/export). Block-causal and
    # streaming: the past `ssa_window` chunks; bidirectional: a band of that half-width.
    ssa_window: int | None = None
    # With a window: the clip's first chunk stays visible to every later chunk (an attention
    # sink, as StreamingLLM and Rolling Forcing keep), at the cost of one chunk of KV cache.
    ssa_sink: bool = False
    # Streaming only: the sink's keys re-rotated to sit just before the window's oldest chunk
    # (StreamingLLM's positions), so that no key is further back than the window reaches however
    # long the stream; for a model trained without it, at inference (model/bounded.py). A
    # block-causal (training) pass keeps the sink at frame 0.
    ssa_sink_adjacent: bool = False
    # Streaming only: LCHA's sums keep the first chunk's share and the last `lcha_window`
    # chunks' (None: every frame's, as trained); set at inference for streams longer than the
    # trained clip (model/bounded.py). A block-causal (training) pass sums every frame.
    lcha_window: int | None = None
    conv_kernel: tuple[int, int, int] = (3, 3, 3)  # depth-wise conv (frames, rows, cols)
    rope_theta: float = 10000.0
    freq_dim: int = 128  # sinusoidal features of sigma and d

    def __post_init__(self) -> None:
        check_config(self)  # types and ranges first (JSON and TOML lists -> tuples)
        if self.dim % self.heads or self.dim // self.heads < 6 or (self.dim // self.heads) % 2:
            raise ValueError(f"dim must split into heads of an even number >= 6 of channels for "
                             f"3D RoPE (got dim {self.dim}, heads {self.heads})")
        pf, ph, pw = self.patch
        if self.latent_frames % pf or self.latent_height % ph or self.latent_width % pw:
            raise ValueError(f"latent {self.latent_frames}x{self.latent_height}x{self.latent_width} "
                             f"is not divisible by patch {self.patch}")
        if self.chunk_frames < 1 or self.chunk_frames % pf:
            raise ValueError(f"chunk_frames {self.chunk_frames} must be a positive multiple of the "
                             f"temporal patch {pf}")
        if self.ssa_window is not None and self.ssa_window < 0:
            raise ValueError("ssa_window must be >= 0 past chunks (or None for all)")
        if self.ssa_sink and self.ssa_window is None:
            raise ValueError("ssa_sink keeps the first chunk beside a window: set ssa_window too")
        if self.ssa_sink_adjacent and not self.ssa_sink:
            raise ValueError("ssa_sink_adjacent places the sink next to the window: set ssa_sink too")
        if any(k % 2 == 0 for k in self.conv_kernel[1:]):
            raise ValueError(f"conv_kernel {self.conv_kernel}: spatial sizes must be odd ('same' padding)")
        _, gh, gw = self.grid
        for spec in self.layout:
            _, stride = parse_block(spec)
            if gh % stride or gw % stride:
                raise ValueError(f"block {spec!r}: stride {stride} does not divide the token grid "
                                 f"{gh}x{gw} (latent / patch); use a smaller stride")

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid (frames, rows, cols) of a whole clip."""
        pf, ph, pw = self.patch
        return self.latent_frames // pf, self.latent_height // ph, self.latent_width // pw

    @property
    def chunk_token_frames(self) -> int:
        return self.chunk_frames // self.patch[0]

    def replace(self, **changes: Any) -> StudentConfig:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StudentConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown student config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    def save(self, url: str) -> None:
        """Write the config as JSON to any fsspec URL."""
        with fsspec.open(url, "w") as handle:
            json.dump(self.to_json(), handle, indent=1)

    @classmethod
    def load(cls, url: str) -> StudentConfig:
        """``save``'s JSON file, read with a bound; errors name the file."""
        try:
            data = json.loads(read_config(url, "student config"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"student config {url} is not JSON: {exc}") from None
        return cls.from_json(data)
