"""LCHA, LinConv Hybrid Attention (DESIGN 5): linear attention || causal depth-wise 3D conv.

(a) linear attention with kernel phi(x) = softplus(W x + b) on RMS-normalised q and k, with 3D
    RoPE on the numerator features: y_i = rope(phi(q_i))^T S / phi(q_i)^T z where
    S = sum_j rope(phi(k_j)) v_j^T and z = sum_j phi(k_j): linear in the token count;
(b) a depth-wise 3D convolution with causal temporal padding, then a channel mix;
joined per channel by a learnable FusionGate. Streaming carries S, z and the conv's last frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import apply_rope, rope_angles

EPS = 1e-6


class FusionGate(nn.Module):
    """g = sigmoid(W x): per-token, per-channel mix of the attention and convolution branches."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn: torch.Tensor, conv: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.proj(x))
        return gate * attn + (1 - gate) * conv


def linear_attention_sums(fk_rot: torch.Tensor, fk: torch.Tensor, v: torch.Tensor):
    """S (B,H,dk,dv) and z (B,H,dk) of a set of keys/values (B,H,T,·)."""
    return torch.einsum("bhtd,bhte->bhde", fk_rot, v), fk.sum(2)


def linear_attention_read(fq_rot: torch.Tensor, fq: torch.Tensor, s: torch.Tensor,
                          z: torch.Tensor) -> torch.Tensor:
    """Outputs (B,H,T,dv) of queries against accumulated sums; s, z may carry a chunk axis."""
    if s.dim() == 5:  # per-chunk sums: (B,H,N,dk,dv), queries (B,H,N,t,dk)
        num = torch.einsum("bhntd,bhnde->bhnte", fq_rot, s)
        den = torch.einsum("bhntd,bhnd->bhnt", fq, z)
    else:
        num = torch.einsum("bhtd,bhde->bhte", fq_rot, s)
        den = torch.einsum("bhtd,bhd->bht", fq, z)
    return num / (den[..., None] + EPS)


def depthwise_conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Depth-wise 3D conv, 'valid' in time (the caller pads the past), 'same' in space, as a sum
    of depth-wise 2D convs over the temporal taps: identical to grouped Conv3d, and several
    times faster to train on CPU.

    x: (B, C, F + kt - 1, H, W); weight: (C, kt, kh, kw) -> (B, C, F, H, W)
    """
    c, kt, kh, kw = weight.shape
    b, _, _, h, w = x.shape
    frames = x.shape[2] - kt + 1
    out = None
    for dt in range(kt):
        taps = x[:, :, dt : dt + frames].transpose(1, 2).reshape(b * frames, c, h, w)
        y = F.conv2d(taps, weight[:, dt, None], None, padding=(kh // 2, kw // 2), groups=c)
        out = y if out is None else out + y
    out = out.view(b, frames, c, h, w).transpose(1, 2)  # (B, C, F, H, W)
    return out + bias.view(1, c, 1, 1, 1)


class LCHA(nn.Module):
    def __init__(self, dim: int, heads: int, conv_kernel=(3, 3, 3)):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.RMSNorm(self.head_dim)
        self.k_norm = nn.RMSNorm(self.head_dim)
        self.phi = nn.Linear(self.head_dim, self.head_dim)  # kernel feature map, shared by q and k
        kt, kh, kw = conv_kernel
        self.conv_frames = kt - 1  # causal context the conv needs
        self.kernel = tuple(conv_kernel)
        self.conv_weight = nn.Parameter(torch.randn(dim, kt, kh, kw) / (kt * kh * kw) ** 0.5)
        self.conv_bias = nn.Parameter(torch.zeros(dim))
        self.channel_mix = nn.Linear(dim, dim)
        self.gate = FusionGate(dim)
        self.out = nn.Linear(dim, dim)

    def features(self, x: torch.Tensor, grid, frame_offset: int):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        # q, k, v: (B, heads, T, head_dim)
        fq = F.softplus(self.phi(self.q_norm(q)))
        fk = F.softplus(self.phi(self.k_norm(k)))
        angles = rope_angles(grid, self.head_dim, frame_offset, device=x.device)
        return apply_rope(fq, angles), fq, apply_rope(fk, angles), fk, v

    def attention(self, x, grid, ctx, state):
        fq_r, fq, fk_r, fk, v = self.features(x, grid, ctx.frame_offset)
        b, h, t, d = fq.shape
        if state is not None:  # streaming: past chunks' sums plus this chunk's own
            s_new, z_new = linear_attention_sums(fk_r, fk, v)
            out = linear_attention_read(fq_r, fq, state["s"] + s_new, state["z"] + z_new)
            return out, {"s": state["s"] + s_new, "z": state["z"] + z_new}
        if not ctx.causal:
            s, z = linear_attention_sums(fk_r, fk, v)
            return linear_attention_read(fq_r, fq, s, z), None
        # block-causal: chunk n sees the sums of chunks <= n (inclusive prefix sums)
        n = grid[0] // ctx.chunk_token_frames
        split = lambda a: a.reshape(b, h, n, t // n, a.shape[-1])  # noqa: E731  (B,H,N,t,d)
        s = torch.einsum("bhntd,bhnte->bhnde", split(fk_r), split(v)).cumsum(2)
        z = split(fk).sum(3).cumsum(2)
        out = linear_attention_read(split(fq_r), split(fq), s, z)
        return out.reshape(b, h, t, -1), None

    def convolution(self, x, grid, state):
        b, t, c = x.shape
        f, hh, ww = grid
        vol = x.transpose(1, 2).reshape(b, c, f, hh, ww)  # (B, C, F, H, W)
        past = state["conv"] if state is not None else vol.new_zeros(b, c, self.conv_frames, hh, ww)
        padded = torch.cat([past, vol], dim=2)  # causal: only past frames pad the front
        out = depthwise_conv3d(padded, self.conv_weight, self.conv_bias)
        out = out.flatten(2).transpose(1, 2)  # (B, T, C)
        tail = padded[:, :, -self.conv_frames:] if self.conv_frames else padded[:, :, :0]
        return self.channel_mix(out), tail

    def forward(self, x: torch.Tensor, ctx, state: dict | None = None):
        grid = ctx.grid
        attn, new_sums = self.attention(x, grid, ctx, state)
        b, h, t, d = attn.shape
        attn = attn.transpose(1, 2).reshape(b, t, h * d)
        conv, tail = self.convolution(x, grid, state)
        out = self.out(self.gate(x, attn, conv))
        new_state = None if state is None else {**new_sums, "conv": tail}
        return out, new_state

    def init_state(self, batch: int, grid, device, dtype) -> dict:
        _, hh, ww = grid
        dim = self.heads * self.head_dim
        return {"s": torch.zeros(batch, self.heads, self.head_dim, self.head_dim, device=device, dtype=dtype),
                "z": torch.zeros(batch, self.heads, self.head_dim, device=device, dtype=dtype),
                "conv": torch.zeros(batch, dim, self.conv_frames, hh, ww, device=device, dtype=dtype)}
