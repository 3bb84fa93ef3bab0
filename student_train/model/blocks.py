"""A sandwich block: adaLN-modulated token mixer (LCHA or SSA), text cross-attention, MLP."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import parse_block
from .embeddings import modulate
from .lcha import LCHA
from .ssa import SSA


@dataclass
class MixContext:
    grid: tuple[int, int, int]  # token grid (frames, rows, cols) of the tokens being processed
    causal: bool = False
    chunk_token_frames: int = 1
    frame_offset: int = 0  # token frames before these tokens (streaming position)


class CrossAttention(nn.Module):
    def __init__(self, dim: int, text_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(text_dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q = self.q(x).view(b, t, self.heads, -1).transpose(1, 2)  # (B, heads, T, hd)
        k, v = self.kv(text).view(b, text.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        return self.out(out.transpose(1, 2).reshape(b, t, c))


class SandwichBlock(nn.Module):
    def __init__(self, spec: str, dim: int, heads: int, text_dim: int, mlp_ratio: float,
                 conv_kernel=(3, 3, 3), ssa_window: int | None = None):
        super().__init__()
        self.kind, self.stride = parse_block(spec)
        self.mixer = (LCHA(dim, heads, conv_kernel) if self.kind == "lcha"
                      else SSA(dim, heads, self.stride, ssa_window))
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.cross = CrossAttention(dim, text_dim, heads)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.ada.weight)  # starts as identity blocks (adaLN-zero)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x, cond, text, text_mask, ctx: MixContext, state=None):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(F.silu(cond)).chunk(6, dim=-1)
        mixed, new_state = self.mixer(modulate(self.norm1(x), shift1, scale1), ctx, state)
        x = x + gate1[:, None] * mixed
        x = x + self.cross(self.norm2(x), text, text_mask)
        x = x + gate2[:, None] * self.mlp(modulate(self.norm3(x), shift2, scale2))
        return x, new_state
