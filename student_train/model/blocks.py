"""A sandwich block: adaLN-modulated token mixer (LCHA or SSA), text cross-attention, MLP."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import torch
from torch import nn

from .config import parse_block
from .embeddings import modulate, rope_tables
from .lcha import LCHA
from .reuse import NONE, Shared
from .ssa import SSA


@dataclass
class MixContext:
    """What every block of one forward pass shares."""

    grid: tuple[int, int, int]  # token grid (frames, rows, cols) of the tokens being processed
    cond: torch.Tensor  # (B, D) SiLU of the conditioning vector (sigma, d, pooled text)
    text_bias: torch.Tensor  # (B, 1, 1, L) additive cross-attention mask (0 or -inf-like)
    head_dim: int
    rope_theta: float = 10000.0
    causal: bool = False
    chunk_token_frames: int = 1
    frame_offset: int | torch.Tensor = 0  # absolute index of the first token frame (streaming)
    shared: Shared = NONE  # text- and cond-derived tensors kept across a stream's passes (reuse.py)
    _rope: dict = field(default_factory=dict)

    def rope(self, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (T / stride^2, head_dim) of the grid strided spatially; cached per pass, and
        across passes at the same frame offset (_rope_across_passes)."""
        if stride not in self._rope:
            f, h, w = self.grid
            grid, offset = (f, h // stride, w // stride), _offset_key(self.frame_offset)
            args = (self.head_dim, stride, self.rope_theta, self.cond.device, self.cond.dtype)
            self._rope[stride] = (_rope_across_passes(grid, offset, *args) if offset is not None
                                  else _rope(grid, self.frame_offset, *args))
        return self._rope[stride]


def _rope(grid, offset, head_dim, stride, theta, device, dtype):
    return rope_tables(grid, head_dim, frame_offset=offset, spatial_step=stride, theta=theta,
                       device=device, dtype=dtype)


# Streaming runs a chunk's few denoising steps and its commit at one frame offset, and training
# revisits the same offsets every step: the tables (a dozen small ops, ~0.2 ms per pass on CPU,
# the same bytes every time) are kept for the last 64 (grid, offset, stride) seen, enough for a
# training clip's chunks at two strides. Callers never write to them.
_rope_across_passes = lru_cache(maxsize=64)(_rope)


def _offset_key(offset: int | torch.Tensor) -> int | None:
    """frame_offset as a cache key, or None where reading its value would wait for a device or
    break tracing (torch.export takes the offset as an input tensor), and in inference mode
    (its tensors could not be saved for a later backward)."""
    if torch.is_inference_mode_enabled():
        return None
    if isinstance(offset, int):
        return offset
    if type(offset) is torch.Tensor and offset.device.type == "cpu" and not torch.compiler.is_compiling():
        return int(offset)
    return None


def text_attention_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) bool -> (B, 1, 1, L) additive bias. A large finite negative (not -inf) so that an
    all-padding row gives a uniform average instead of NaN."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
        ~mask, torch.finfo(dtype).min / 2)[:, None, None, :]


class CrossAttention(nn.Module):
    """Video tokens attend to the cached text-encoder tokens (no positions: text order is
    already in the embeddings)."""

    def __init__(self, dim: int, text_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(text_dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def keys_values(self, text: torch.Tensor) -> torch.Tensor:
        """(2, B, H, L, d): the text's keys and values."""
        return self.kv(text).view(text.shape[0], text.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)

    def forward(self, x: torch.Tensor, text: torch.Tensor, bias: torch.Tensor,
                kv: torch.Tensor | None = None) -> torch.Tensor:
        """kv: ``keys_values(text)`` when already at hand (a stream's passes share it)."""
        b, t, c = x.shape
        q = self.q(x).view(b, t, self.heads, -1).transpose(1, 2)  # (B, H, T, d)
        k, v = self.keys_values(text) if kv is None else kv
        # k, v: (B, H, L, d). Few text tokens: a plain softmax beats fused kernels on CPU here.
        scores = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5 + bias  # (B, H, T, L)
        out = torch.matmul(torch.softmax(scores, dim=-1), v)  # (B, H, T, d)
        return self.out(out.transpose(1, 2).reshape(b, t, c))


class SandwichBlock(nn.Module):
    def __init__(self, spec: str, dim: int, heads: int, text_dim: int, mlp_ratio: float,
                 conv_kernel=(3, 3, 3), ssa_window: int | None = None, ssa_sink: bool = False,
                 ssa_sink_adjacent: bool = False, lcha_window: int | None = None):
        super().__init__()
        self.spec = spec
        self.kind, self.stride = parse_block(spec)
        self.mixer = (SSA(dim, heads, self.stride, ssa_window, sink=ssa_sink, sink_adjacent=ssa_sink_adjacent)
                      if self.kind == "ssa"
                      else LCHA(dim, heads, conv_kernel, branches=self.kind, window=lcha_window))
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.cross = CrossAttention(dim, text_dim, heads)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.ada = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.ada.weight)  # adaLN-zero: every block starts as the identity
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, text: torch.Tensor, ctx: MixContext, state: dict | None = None):
        shift1, scale1, gate1, shift2, scale2, gate2 = ctx.shared.cond(
            self.ada, lambda: self.ada(ctx.cond).chunk(6, dim=-1))
        mixed, new_state = self.mixer(modulate(self.norm1(x), shift1, scale1), ctx, state)
        x = torch.addcmul(x, gate1[:, None], mixed)
        kv = ctx.shared.text(self.cross, lambda: self.cross.keys_values(text))
        x = x + self.cross(self.norm2(x), text, ctx.text_bias, kv)
        x = torch.addcmul(x, gate2[:, None], self.mlp(modulate(self.norm3(x), shift2, scale2)))
        return x, new_state

    def init_state(self, batch: int, grid, device=None, dtype=torch.float32) -> dict:
        return self.mixer.init_state(batch, grid, device, dtype)
