"""SSA, Stride Self-Attention (DESIGN 5): Q, K, V pooled by a spatial stride, softmax attention
on the reduced tokens, output upsampled back. Streaming keeps a KV cache of past chunks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SSA(nn.Module):
    def __init__(self, dim: int, heads: int, stride: int, window: int | None = None):
        super().__init__()
        self.heads, self.head_dim, self.stride, self.window = heads, dim // heads, stride, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def _reduce(self, x: torch.Tensor, grid) -> torch.Tensor:
        """(B, T, C) -> (B, heads, T/stride^2, head_dim) by average pooling each frame."""
        b, t, c = x.shape
        f, h, w = grid
        s = self.stride
        if s > 1:
            frames = x.reshape(b, f, h, w, c).permute(0, 1, 4, 2, 3).reshape(b * f, c, h, w)
            x = F.avg_pool2d(frames, s).reshape(b, f, c, h // s, w // s).permute(0, 1, 3, 4, 2)
        return x.reshape(b, -1, self.heads, self.head_dim).transpose(1, 2)

    def _causal_mask(self, grid, ctx, device) -> torch.Tensor:
        f, h, w = grid
        per_frame = (h // self.stride) * (w // self.stride)
        chunk = torch.arange(f, device=device).repeat_interleave(per_frame) // ctx.chunk_token_frames
        allowed = chunk[:, None] >= chunk[None, :]
        if self.window is not None:
            allowed &= chunk[:, None] - chunk[None, :] <= self.window
        return allowed

    def forward(self, x: torch.Tensor, ctx, state: dict | None = None):
        grid = ctx.grid
        f, h, w = grid
        b, t, c = x.shape
        q, k, v = (self._reduce(part, grid) for part in self.qkv(x).chunk(3, dim=-1))
        new_state = None
        mask = None
        if state is not None:
            new_state = {"k": torch.cat([state["k"], k], 2), "v": torch.cat([state["v"], v], 2)}
            k, v = new_state["k"], new_state["v"]
            if self.window is not None:  # attend to this chunk plus `window` past chunks
                n = q.shape[2]
                k, v = k[:, :, -(self.window + 1) * n:], v[:, :, -(self.window + 1) * n:]
                keep = self.window * n
                new_state = {"k": k[:, :, k.shape[2] - keep:], "v": v[:, :, v.shape[2] - keep:]}
        elif ctx.causal:
            mask = self._causal_mask(grid, ctx, x.device)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, heads, Tr, head_dim)
        s = self.stride
        out = out.transpose(1, 2).reshape(b, f, h // s, w // s, c)
        if s > 1:  # nearest upsampling back to the full token grid
            out = out.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)
        return self.out(out.reshape(b, t, c)), new_state

    def init_state(self, batch: int, grid, device, dtype) -> dict:
        empty = torch.zeros(batch, self.heads, 0, self.head_dim, device=device, dtype=dtype)
        return {"k": empty, "v": empty.clone()}
