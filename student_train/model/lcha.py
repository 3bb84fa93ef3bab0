"""LCHA, LinConv Hybrid Attention (DESIGN 5): linear attention || causal depth-wise 3D conv.

(a) linear attention with kernel phi(x) = softplus(W x + b) on RMS-normalised q and k (QK
    normalisation), 3D RoPE on the numerator features:
        y_i = rope(phi(q_i))^T S / phi(q_i)^T z,  S = sum_j rope(phi(k_j)) v_j^T,  z = sum_j phi(k_j)
    linear in the token count. RoPE only in the numerator keeps the denominator a positive sum
    (rotated features can cancel), and rope(a)^T rope(b) depends only on the relative position.
(b) a depth-wise 3D convolution with causal temporal padding, then a linear channel mix;
joined per channel by a learnable FusionGate conditioned on (sigma, d, text).
Streaming carries S, z and the conv's last kt - 1 input frames: every chunk costs the same.
With ``window`` (streaming only, at inference: StudentConfig.lcha_window) S and z hold the first
chunk's share (a sink) and the last ``window`` chunks' as a running total, with those chunks'
shares kept apart in a ring (``window`` tensors like S and z) so that the oldest can leave it, and every
older chunk's share is dropped: past the trained length the sums otherwise dilute what the
first chunk showed among ever more frames (BENCHMARKS "Bounded memory"). A running total read
as is, and a ring moved on by reference: a pass copies no slot (BENCHMARKS, the windowed sums'
cost), at the cost of the last bits of adding and subtracting.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import apply_rope

EPS = 1e-6


class FusionGate(nn.Module):
    """g = sigmoid(W c + b) per sample and channel; out = g * attention + (1 - g) * conv.

    The gate reads the conditioning vector rather than each token: at high noise the model may
    lean on the local conv, near sigma 0 on global attention, and a per-sample gate costs no
    per-token FLOPs. Zero init starts at an even mix."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def weights(self, cond: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.proj(cond))[:, None]  # (B, 1, D)

    def forward(self, cond: torch.Tensor, attn: torch.Tensor, conv: torch.Tensor,
                gate: torch.Tensor | None = None) -> torch.Tensor:
        """gate: ``weights(cond)`` when already at hand (a stream's passes share it)."""
        gate = self.weights(cond) if gate is None else gate
        return torch.addcmul(conv, gate, attn - conv)


def key_sums(fk_rot: torch.Tensor, fk: torch.Tensor, v: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The sums S (B, H, d, d) and z (B, H, d) of one pass's keys (B, T, H, d) and values."""
    # matmuls on transposed views rather than einsum: the same batched products (the same
    # bytes) without einsum's per-call planning: a quarter less time at a few tokens
    return torch.matmul(fk_rot.permute(0, 2, 3, 1), v.transpose(1, 2)), fk.sum(1)


def read_sums(fq_rot: torch.Tensor, fq: torch.Tensor, s: torch.Tensor, z: torch.Tensor
              ) -> torch.Tensor:
    """Queries (B, T, H, d) read against sums S (B, H, d, d), z (B, H, d): out (B, T, H, d)."""
    num = torch.matmul(fq_rot.transpose(1, 2), s).transpose(1, 2)  # (B, T, H, d)
    den = torch.matmul(fq.transpose(1, 2), z[..., None]).squeeze(-1).transpose(1, 2)  # (B, T, H)
    return num / (den[..., None] + EPS)


def linear_attention(fq_rot: torch.Tensor, fq: torch.Tensor, fk_rot: torch.Tensor,
                     fk: torch.Tensor, v: torch.Tensor, *, chunks: int = 1,
                     past: tuple[torch.Tensor, torch.Tensor] | None = None):
    """Kernelised attention of features (B, T, H, d) in O(T d^2).

    chunks > 1: block-causal over equal chunks of T (chunk n reads the sums of chunks <= n).
    past: (S, z) sums of earlier tokens, added to this call's (streaming).
    Returns out (B, T, H, d) and this call's total sums (S (B,H,d,d), z (B,H,d)), past included.
    """
    b, t, h, _ = fq.shape
    if chunks == 1:
        s, z = key_sums(fk_rot, fk, v)
        if past is not None:
            s, z = s + past[0], z + past[1]
        return read_sums(fq_rot, fq, s, z), (s, z)
    split = lambda a: a.reshape(b, chunks, t // chunks, h, a.shape[-1])  # (B, N, t, H, d)
    s = torch.einsum("bnthd,bnthe->bnhde", split(fk_rot), split(v)).cumsum(1)  # inclusive prefix
    z = split(fk).sum(2).cumsum(1)  # (B, N, H, d)
    num = torch.einsum("bnthd,bnhde->bnthe", split(fq_rot), s)
    den = torch.einsum("bnthd,bnhd->bnth", split(fq), z)
    out = (num / (den[..., None] + EPS)).reshape(b, t, h, -1)
    return out, (s[:, -1], z[:, -1])


def causal_depthwise_conv(frames: torch.Tensor, past: torch.Tensor, weight: torch.Tensor,
                          bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth-wise 3D conv, causal in time ('same' zero padding in space), channels last.

    frames: (B, F, H, W, C); past: (B, kt - 1, H, W, C), the frames before them (zeros at the
    start of a clip); weight (C, kt, kh, kw). Output frame f reads input frames f - kt + 1 .. f
    only. Done as one depth-wise 2D conv per temporal tap on a channels-last view (no copies of
    the tokens) and a sum of time-shifted outputs: several times faster on CPU than Conv3d.
    A single frame (streaming) takes one conv over its taps side by side (below).
    Returns (B, F, H, W, C) and the new past (the last kt - 1 input frames).
    """
    b, f, h, w, c = frames.shape
    kt, kh, kw = weight.shape[1:]
    padded = torch.cat([past, frames], dim=1)  # (B, F + kt - 1, H, W, C)
    fp = padded.shape[1]
    ph, pw = kh // 2, kw // 2
    # A grid smaller than the kernel (2x2 tokens, 3x3 taps) sends conv2d's own padding down a
    # path whose backward was 6x slower on CPU (bench/bench_conv.py); padding first gives the
    # same bytes. Larger grids keep conv2d's padding, which is 2x faster there.
    prepad = h < kh or w < kw
    pad = (0, 0, pw, pw, ph, ph)
    conv = lambda planes, taps: F.conv2d(planes, taps, None, padding=0 if prepad else (ph, pw),
                                         groups=taps.shape[0])
    if f == 1:
        # One streamed frame: its kt taps read the kt padded frames, so those frames side by side
        # in channels are one depth-wise conv of kt * C channels. One conv2d call instead of kt,
        # each of which convolved all kt frames to keep one: at a few tokens per frame the call
        # overhead dominates (2x faster, bench/bench_lcha_stream.py). Each output channel is the
        # same depth-wise kernel on the same numbers: the same bytes, gradients included. Not for
        # several frames: the taps would read overlapping frames (a copy each, slower at 15
        # frames) and the frames' gradients would be summed in another order (other bits).
        stacked = padded.permute(0, 2, 3, 1, 4)  # (B, H, W, kt, C), tap i reads frame i
        if prepad:
            stacked = F.pad(stacked, (0, 0) + pad)
        planes = stacked.flatten(3).permute(0, 3, 1, 2)  # (B, kt*C, H', W'), channels-last
        y = conv(planes, weight.transpose(0, 1).reshape(kt * c, 1, kh, kw))  # (B, kt*C, H, W)
        y = y.permute(0, 2, 3, 1).view(b, 1, h, w, kt, c)
        taps = [y[..., i, :] for i in range(kt)]
    else:
        if prepad:
            padded_hw = F.pad(padded, pad)  # (B, F', H + 2ph, W + 2pw, C)
            planes = padded_hw.view(b * fp, h + 2 * ph, w + 2 * pw, c).permute(0, 3, 1, 2)
        else:
            planes = padded.view(b * fp, h, w, c).permute(0, 3, 1, 2)  # (B*F', C, H, W), channels-last
        # tap i reads frame f + i
        taps = (conv(planes, weight[:, i, None]).permute(0, 2, 3, 1).view(b, fp, h, w, c)[:, i : i + f]
                for i in range(kt))
    out = None
    for y in taps:  # summed in tap order in both paths: the same rounding
        out = y if out is None else out + y
    return out + bias, padded[:, fp - (kt - 1):]


def ring_key(sums: str, slot: int) -> str:
    """The state key of a windowed LCHA's ``slot``-th oldest chunk's "s" or "z" sums."""
    return f"{sums}_ring{slot:03d}"


class LCHA(nn.Module):
    """branches: "lcha" (both, fused by the gate), "conv" (the conv alone: no memory beyond its
    kernel, a sanity student) or "lin" (linear attention alone)."""

    def __init__(self, dim: int, heads: int, conv_kernel=(3, 3, 3), branches: str = "lcha",
                 window: int | None = None):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.use_attn, self.use_conv = branches in ("lcha", "lin"), branches in ("lcha", "conv")
        self.window = window if self.use_attn else None  # streaming sums: sink + last `window` chunks
        kt, kh, kw = conv_kernel
        self.conv_frames = kt - 1 if self.use_conv else 0  # causal context the conv carries
        if self.use_attn:
            self.qkv = nn.Linear(dim, 3 * dim)
            self.qk_norm = nn.Parameter(torch.ones(2, 1, self.head_dim))  # RMSNorm gains of q, k
            self.phi = nn.Linear(self.head_dim, self.head_dim)  # kernel map, shared by q and k
        if self.use_conv:
            self.conv_weight = nn.Parameter(torch.randn(dim, kt, kh, kw) / (kt * kh * kw) ** 0.5)
            self.conv_bias = nn.Parameter(torch.zeros(dim))
            self.channel_mix = nn.Linear(dim, dim)
        if self.use_attn and self.use_conv:
            self.gate = FusionGate(dim)
        self.out = nn.Linear(dim, dim)

    def features(self, x: torch.Tensor, ctx):
        """phi(q), phi(k) with and without RoPE, and v: each (B, T, H, d)."""
        b, t, _ = x.shape
        # split (not slicing) keeps the backward free of zero-filled gradient buffers
        qk, v = self.qkv(x).split([2 * self.heads * self.head_dim, self.heads * self.head_dim], -1)
        qk = qk.view(b, t, 2, self.heads, self.head_dim)
        qk = F.rms_norm(qk, (self.head_dim,), eps=EPS) * self.qk_norm  # (B, T, 2, H, d)
        fqk = F.softplus(self.phi(qk))
        cos, sin = ctx.rope(1)  # (T, d)
        fqk_rot = apply_rope(fqk, cos[:, None, None], sin[:, None, None])
        fq_rot, fk_rot = fqk_rot.unbind(2)
        fq, fk = fqk.unbind(2)
        return fq_rot, fq, fk_rot, fk, v.view(b, t, self.heads, self.head_dim)

    def attention(self, x: torch.Tensor, ctx, state: dict | None = None):
        fq_r, fq, fk_r, fk, v = self.features(x, ctx)
        if state is not None and self.window is not None:
            return self._windowed(fq_r, fq, fk_r, fk, v, state)
        chunks = ctx.grid[0] // ctx.chunk_token_frames if ctx.causal and state is None else 1
        past = (state["s"], state["z"]) if state is not None else None
        out, (s, z) = linear_attention(fq_r, fq, fk_r, fk, v, chunks=chunks, past=past)
        return out.flatten(2), {"s": s, "z": z}  # (B, T, D), the sums that follow

    def _windowed(self, fq_r, fq, fk_r, fk, v, state: dict) -> tuple[torch.Tensor, dict]:
        """A streamed chunk against the kept sums, and the sums that follow. "s", "z" hold the
        running total of the sink's and the window's sums, so a pass reads them as the unbounded
        stream does; the ring keeps the window's chunks' sums apart, oldest first, one tensor per
        slot, so the one leaving is subtracted and the ring moves on by reference, not by a copy
        of every slot on every pass. The first chunk committed is the sink: it enters the total only."""
        own_s, own_z = key_sums(fk_r, fk, v)  # this chunk's: (B, H, d, d), (B, H, d)
        s, z = own_s + state["s"], own_z + state["z"]  # as linear_attention adds its past
        out = read_sums(fq_r, fq, s, z)
        # phi > 0: a stream with a committed sink has z > 0; before it, this chunk is the sink
        windowed = (state["z"].flatten(1).abs().sum(1) > 0).to(z.dtype)[:, None, None]  # (B, 1, 1)
        chunk_s, chunk_z = own_s * windowed[..., None], own_z * windowed
        ring_s = [state[ring_key("s", i)] for i in range(self.window)] + [chunk_s]  # W + 1, oldest first
        ring_z = [state[ring_key("z", i)] for i in range(self.window)] + [chunk_z]
        sums = {"s": s - ring_s[0], "z": z - ring_z[0]}  # without a window, this chunk leaves at once
        for i in range(self.window):
            sums[ring_key("s", i)], sums[ring_key("z", i)] = ring_s[i + 1], ring_z[i + 1]
        return out.flatten(2), sums

    def convolution(self, x: torch.Tensor, ctx, state: dict | None = None):
        b, t, c = x.shape
        f, h, w = ctx.grid
        frames = x.view(b, f, h, w, c)  # token order is (frame, row, col)
        past = state["conv"] if state is not None else x.new_zeros(b, self.conv_frames, h, w, c)
        out, tail = causal_depthwise_conv(frames, past, self.conv_weight, self.conv_bias)
        return self.channel_mix(out.reshape(b, t, c)), tail

    def forward(self, x: torch.Tensor, ctx, state: dict | None = None):
        new: dict[str, torch.Tensor] = {}
        if self.use_attn:
            attn, sums = self.attention(x, ctx, state)
            new.update(sums)
        if self.use_conv:
            conv, new["conv"] = self.convolution(x, ctx, state)
        if self.use_attn and self.use_conv:
            gate = ctx.shared.cond(self.gate, lambda: self.gate.weights(ctx.cond))
            mixed = self.gate(ctx.cond, attn, conv, gate)
        else:
            mixed = attn if self.use_attn else conv
        return self.out(mixed), (None if state is None else new)

    def init_state(self, batch: int, grid, device=None, dtype=torch.float32) -> dict:
        _, h, w = grid
        d, dim = self.head_dim, self.heads * self.head_dim
        state = {}
        if self.use_attn:
            state["s"] = torch.zeros(batch, self.heads, d, d, device=device, dtype=dtype)
            state["z"] = torch.zeros(batch, self.heads, d, device=device, dtype=dtype)
            for i in range(self.window or 0):  # the window's chunks apart, oldest first
                state[ring_key("s", i)] = torch.zeros_like(state["s"])
                state[ring_key("z", i)] = torch.zeros_like(state["z"])
        if self.use_conv:
            state["conv"] = torch.zeros(batch, self.conv_frames, h, w, dim, device=device, dtype=dtype)
        return state
