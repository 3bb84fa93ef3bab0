"""SSA, Stride Self-Attention (DESIGN 5): Q, K, V average-pooled by a spatial stride, softmax
attention on the reduced tokens (QK normalisation, 3D RoPE), output upsampled back (nearest).

The pool is taken before the q/k/v projection and the upsample after the output projection:
both commute with a linear map, so the result equals pooling q, k, v and upsampling the
attention output, at 1/stride^2 of the projection cost.

Block-causal mode: a query chunk sees its own chunk and up to ``window`` past chunks (all when
None). Streaming keeps a KV cache of past chunks: a growing one when window is None, else a
fixed ring of ``window`` chunks with a validity mask, so that shapes and cost stay constant.
Bidirectional mode with a window: a band of ``window`` chunks on either side. ``sink``: the
clip's first chunk stays visible to every chunk (kept apart from the ring while streaming).
``sink_adjacent`` (streaming only): the sink's keys are re-rotated to sit just before the ring's
oldest chunk (StreamingLLM's positions), so that no query sees a key further back than the
window reaches; without it the sink keeps its place at frame 0, a distance that grows without
bound as the stream goes on (and past the trained clip, a distance never trained).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import apply_rope, rope_tables

EPS = 1e-6


def block_causal_mask(frames: int, tokens_per_frame: int, chunk_frames: int,
                      window: int | None, device=None, *, causal: bool = True,
                      sink: bool = False) -> torch.Tensor:
    """(T, T) bool: query token i may attend to key token j (causal: chunks up to ``window``
    back; bidirectional: chunks within ``window`` on either side)."""
    chunk = torch.arange(frames, device=device).repeat_interleave(tokens_per_frame) // chunk_frames
    delta = chunk[:, None] - chunk[None, :]
    allowed = delta >= 0 if causal else torch.ones_like(delta, dtype=torch.bool)
    if window is not None:
        band = delta.abs() <= window
        if sink:
            band |= (chunk == 0)[None, :]
        allowed &= band
    return allowed


def _eager(flag: torch.Tensor) -> bool:
    """Whether the value of ``flag`` may steer Python: on CPU (no wait for a device), without
    grad, not tracing or compiling (an exported step takes the state as input)."""
    return (flag.device.type == "cpu" and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling() and not torch.jit.is_tracing())


class SSA(nn.Module):
    def __init__(self, dim: int, heads: int, stride: int, window: int | None = None, *, sink: bool = False,
                 sink_adjacent: bool = False):
        super().__init__()
        self.heads, self.head_dim, self.stride, self.window = heads, dim // heads, stride, window
        self.sink = sink and window is not None
        self.sink_adjacent = self.sink and sink_adjacent
        self.qkv = nn.Linear(dim, 3 * dim)
        self.qk_norm = nn.Parameter(torch.ones(2, 1, self.head_dim))
        self.out = nn.Linear(dim, dim)

    def reduced_grid(self, grid) -> tuple[int, int, int]:
        f, h, w = grid
        return f, h // self.stride, w // self.stride

    def project(self, x: torch.Tensor, ctx) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pooled, normalised, rotated q, k and v: each (B, H, T / stride^2, d)."""
        b, _, c = x.shape
        f, h, w = ctx.grid
        s = self.stride
        if s > 1:
            x = x.view(b, f, h // s, s, w // s, s, c).mean((3, 5)).reshape(b, -1, c)
        tr = x.shape[1]
        qkv = self.qkv(x).view(b, tr, 3, self.heads, self.head_dim).transpose(1, 3)  # (B, H, 3, Tr, d)
        qk = F.rms_norm(qkv[:, :, :2], (self.head_dim,), eps=EPS) * self.qk_norm  # gains (2, 1, d)
        cos, sin = ctx.rope(s)  # (Tr, d)
        qk = apply_rope(qk, cos, sin)
        return qk[:, :, 0], qk[:, :, 1], qkv[:, :, 2]

    def forward(self, x: torch.Tensor, ctx, state: dict | None = None):
        b, t, c = x.shape
        f, h, w = ctx.grid
        s = self.stride
        q, k, v = self.project(x, ctx)
        mask, new_state = None, None
        if state is not None:
            sink_keys = self._placed_sink(state, ctx) if self.sink and self.sink_adjacent else None
            new_state, k, v, mask = self._with_cache(state, k, v, sink_keys)
        elif ctx.causal or self.window is not None:
            mask = block_causal_mask(f, (h // s) * (w // s), ctx.chunk_token_frames, self.window,
                                     x.device, causal=ctx.causal, sink=self.sink)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, Tr, d)
        out = self.out(out.transpose(1, 2).reshape(b, -1, c))  # (B, Tr, C)
        if s > 1:  # nearest upsampling back to the full token grid
            out = out.view(b, f, h // s, 1, w // s, 1, c).expand(b, f, h // s, s, w // s, s, c)
            out = out.reshape(b, t, c)
        return out, new_state

    def _placed_sink(self, state: dict, ctx) -> torch.Tensor:
        """The sink's keys (B, H, chunk tokens, d), rotated from frame 0 to the chunk just before
        the ring's oldest: for a chunk starting at frame F, a shift of F - (window + 1) chunks
        (0 while the ring is not yet full). RoPE composes: rope(rope(k, 0), delta) = rope(k, delta)."""
        chunk = ctx.chunk_token_frames
        shift = ctx.frame_offset - (self.window + 1) * chunk
        shift = shift.clamp(min=0) if isinstance(shift, torch.Tensor) else max(shift, 0)
        keys = state["sink_k"]
        cos, sin = rope_tables((1, 1, 1), self.head_dim, frame_offset=shift, theta=ctx.rope_theta,
                               device=keys.device, dtype=keys.dtype)  # (1, d): a shift in time only
        return apply_rope(keys, cos, sin)

    def _with_cache(self, state: dict, k: torch.Tensor, v: torch.Tensor,
                    sink_keys: torch.Tensor | None = None):
        """Keys/values of cached past chunks plus this chunk's, their mask, and the next cache.
        ``sink_keys``: the sink's keys as this chunk attends to them (default: as cached)."""
        sink_keys = state.get("sink_k") if sink_keys is None else sink_keys
        if self.sink and _eager(state["sink_valid"]):
            return self._with_sink_eager(state, k, v, sink_keys)
        keys, values = torch.cat([state["k"], k], 2), torch.cat([state["v"], v], 2)
        if self.window is None:  # unbounded: the cache grows by one chunk per call
            return {"k": keys, "v": values}, keys, values, None
        valid = torch.cat([state["valid"], state["valid"].new_ones(k.shape[2])])
        keep = state["k"].shape[2]  # a ring of `window` chunks: drop the oldest chunk
        new = {"k": keys[:, :, keys.shape[2] - keep:], "v": values[:, :, values.shape[2] - keep:],
               "valid": valid[valid.shape[0] - keep:]}
        if not self.sink:
            return new, keys, values, valid[None, :]
        # The sink is the first chunk ever committed: empty until then, fixed after. It never
        # enters the ring, so that no chunk sees it twice.
        first = ~state["sink_valid"][0]
        for key in ("k", "v", "valid"):
            new[key] = torch.where(first, state[key], new[key])
        new["sink_k"] = torch.where(first, k, state["sink_k"])
        new["sink_v"] = torch.where(first, v, state["sink_v"])
        new["sink_valid"] = state["sink_valid"] | True
        keys, values = torch.cat([sink_keys, keys], 2), torch.cat([state["sink_v"], values], 2)
        return new, keys, values, torch.cat([state["sink_valid"], valid])[None, :]

    def _with_sink_eager(self, state: dict, k: torch.Tensor, v: torch.Tensor, sink_keys: torch.Tensor):
        """``_with_cache``'s sink case where it can be read whether a chunk was committed: the
        next cache as views of this pass's keys and values (torch.where copied the ring in each
        of a chunk's ~5 passes, only one of which keeps its state) and the sink joined in the
        same copy (not a second one). The same bytes; without grad only (torch.where's backward
        adds zeros to the branch not taken: a -0.0 gradient would become +0.0)."""
        valid = torch.cat([state["sink_valid"], state["valid"], state["valid"].new_ones(k.shape[2])])
        keys = torch.cat([sink_keys, state["k"], k], 2)  # (B, H, sink + ring + chunk, d)
        values = torch.cat([state["sink_v"], state["v"], v], 2)
        if not bool(state["sink_valid"][0]):  # nothing committed yet: this chunk becomes the sink
            new = {key: state[key] for key in ("k", "v", "valid")}
            new.update(sink_k=k, sink_v=v, sink_valid=state["sink_valid"] | True)
        else:
            keep = state["k"].shape[2]  # the ring drops its oldest chunk
            new = {key: state[key] for key in ("sink_k", "sink_v", "sink_valid")}
            new.update(k=keys[:, :, keys.shape[2] - keep:], v=values[:, :, values.shape[2] - keep:],
                       valid=valid[valid.shape[0] - keep:])
        return new, keys, values, valid[None, :]

    def init_state(self, batch: int, grid, device=None, dtype=torch.float32) -> dict:
        f, h, w = self.reduced_grid(grid)
        slots = 0 if self.window is None else self.window * f * h * w
        empty = torch.zeros(batch, self.heads, slots, self.head_dim, device=device, dtype=dtype)
        state = {"k": empty, "v": empty.clone()}
        if self.window is not None:
            state["valid"] = torch.zeros(slots, dtype=torch.bool, device=device)
        if self.sink:
            chunk = f * h * w
            state["sink_k"] = torch.zeros(batch, self.heads, chunk, self.head_dim, device=device, dtype=dtype)
            state["sink_v"] = torch.zeros_like(state["sink_k"])
            state["sink_valid"] = torch.zeros(chunk, dtype=torch.bool, device=device)
        return state
