"""S2DiT: the sandwich diffusion transformer; bidirectional, block-causal and streaming.

forward(x (B,C,F,H,W), sigma (B,), step_size (B,), text_emb (B,L,D), text_mask (B,L) bool,
        *, causal=False) -> velocity (B,C,F,H,W)       (DESIGN 4.1: v = eps - x0)
    causal=True is block-causal over chunks of ``config.chunk_frames`` latent frames; the same
    weights serve both modes.
init_stream_state(batch) -> StreamState
forward_chunk(x_chunk, sigma, step_size, text_emb, text_mask, state) -> (v_chunk, next_state)
    the chunk's velocity given the committed past; ``state`` itself is left as it was.
commit_chunk(x_chunk, text_emb, text_mask, state, sigma=0.0, noise=None) -> next_state
    the explicit advance: appends a finished chunk's context (clean at sigma 0, or noised to the
    context level with the given noise) to the state.

Conditioning: c = emb(sigma) + emb(d) + proj(masked mean of the text tokens); c modulates
every block (adaLN-zero) and the final layer, the pooled text is also added to every token,
and every block cross-attends to the text tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import io
from .blocks import MixContext, SandwichBlock, text_attention_bias
from .config import StudentConfig
from .embeddings import ScalarEmbedding, modulate
from .reuse import NONE, Shared, StreamReuse
from .streaming import StreamState


class S2DiT(nn.Module):
    def __init__(self, config: StudentConfig):
        super().__init__()
        self.config = cfg = config
        pf, ph, pw = cfg.patch
        self.patch_embed = nn.Linear(cfg.latent_channels * pf * ph * pw, cfg.dim)
        self.sigma_embed = ScalarEmbedding(cfg.dim, cfg.freq_dim)
        self.step_embed = ScalarEmbedding(cfg.dim, cfg.freq_dim)  # d = 0: instantaneous velocity
        # Text tokens are normalised and lifted to the model width first (as Wan's text
        # embedder does): cached encoders differ wildly in scale, and without it the student
        # learned to ignore small-norm embeddings (prompt-blind samples, measured).
        self.text_embed = nn.Sequential(nn.LayerNorm(cfg.text_dim), nn.Linear(cfg.text_dim, cfg.dim),
                                        nn.GELU(approximate="tanh"), nn.Linear(cfg.dim, cfg.dim))
        self.text_pool = nn.Linear(cfg.dim, cfg.dim)
        self.blocks = nn.ModuleList(
            SandwichBlock(spec, cfg.dim, cfg.heads, cfg.dim, cfg.mlp_ratio, cfg.conv_kernel,
                          cfg.ssa_window, cfg.ssa_sink, cfg.ssa_sink_adjacent, cfg.lcha_window)
            for spec in cfg.layout)
        self.final_norm = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Linear(cfg.dim, 2 * cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.latent_channels * pf * ph * pw)
        for zero in (self.final_ada, self.head):  # the untrained model predicts v = 0
            nn.init.zeros_(zero.weight)
            nn.init.zeros_(zero.bias)

    # -- pieces -----------------------------------------------------------------------------
    def _patchify(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        b, c, f, h, w = x.shape
        pf, ph, pw = self.config.patch
        if c != self.config.latent_channels or h % ph or w % pw or f % pf:
            raise ValueError(f"latent of shape {tuple(x.shape)} does not fit the student "
                             f"(channels {self.config.latent_channels}, patch {self.config.patch})")
        grid = (f // pf, h // ph, w // pw)
        x = x.view(b, c, grid[0], pf, grid[1], ph, grid[2], pw).permute(0, 2, 4, 6, 1, 3, 5, 7)
        return self.patch_embed(x.reshape(b, grid[0] * grid[1] * grid[2], -1)), grid  # (B, T, D)

    def _unpatchify(self, tokens: torch.Tensor, cond: torch.Tensor, grid,
                    shared: Shared = NONE) -> torch.Tensor:
        cfg = self.config
        shift, scale = shared.cond(self.final_ada, lambda: self.final_ada(cond).chunk(2, dim=-1))
        out = self.head(modulate(self.final_norm(tokens), shift, scale))  # (B, T, C*pf*ph*pw)
        b = out.shape[0]
        f, h, w = grid
        pf, ph, pw = cfg.patch
        out = out.view(b, f, h, w, cfg.latent_channels, pf, ph, pw)
        out = out.permute(0, 4, 1, 5, 2, 6, 3, 7)  # (B, C, f, pf, h, ph, w, pw)
        return out.reshape(b, cfg.latent_channels, f * pf, h * ph, w * pw)

    def _pool(self, text, mask):
        """(B, D) projected masked mean of the embedded text tokens (B, L, D)."""
        weights = mask.to(text.dtype)[..., None]
        return self.text_pool((text * weights).sum(1) / weights.sum(1).clamp(min=1))

    def _condition(self, sigma, step_size, text, mask, pooled=None):
        pooled = self._pool(text, mask) if pooled is None else pooled
        cond = self.sigma_embed(sigma) + self.step_embed(step_size) + pooled
        return F.silu(cond), pooled

    def _run(self, x, sigma, step_size, text, mask, *, causal: bool,
             state: StreamState | None) -> tuple[torch.Tensor, StreamState | None]:
        cfg = self.config
        # what passes with the same text, or the same (text, sigma, d), share (reuse.py)
        reuse = state.reuse if state is not None else None
        shared = reuse.shared(self, text, mask, sigma, step_size) if reuse is not None else NONE
        tokens, grid = self._patchify(x)
        text, pooled, bias = shared.text(self, lambda: self._text(text, mask, tokens.dtype))
        cond = shared.cond(self, lambda: self._condition(sigma, step_size, text, mask, pooled)[0])
        tokens = tokens + pooled[:, None]
        ctx = MixContext(grid=grid, cond=cond, text_bias=bias, head_dim=cfg.dim // cfg.heads,
                         rope_theta=cfg.rope_theta, causal=causal,
                         chunk_token_frames=cfg.chunk_token_frames,
                         frame_offset=state.frame_offset if state is not None else 0, shared=shared)
        new_blocks = []
        for i, block in enumerate(self.blocks):
            tokens, block_state = block(tokens, text, ctx, state.blocks[i] if state else None)
            new_blocks.append(block_state)
        out = self._unpatchify(tokens, cond, grid, shared)
        if state is None:
            return out, None
        return out, StreamState(new_blocks, state.frame_offset + grid[0], reuse)

    def _text(self, text, mask, dtype):
        """Embedded text tokens (B, L, dim), their pooled projection (B, dim) and the
        cross-attention bias (B, 1, 1, L)."""
        text = self.text_embed(text)
        return text, self._pool(text, mask), text_attention_bias(mask, dtype)

    # -- public API ---------------------------------------------------------------------------
    def forward(self, x, sigma, step_size, text_emb, text_mask, *, causal: bool = False):
        if causal and x.shape[2] % self.config.chunk_frames:
            raise ValueError(f"{x.shape[2]} latent frames are not whole chunks of "
                             f"{self.config.chunk_frames} (config.chunk_frames)")
        return self._run(x, sigma, step_size, text_emb, text_mask, causal=causal, state=None)[0]

    def init_stream_state(self, batch: int, device=None, dtype=torch.float32) -> StreamState:
        cfg = self.config
        device = device if device is not None else next(self.parameters()).device
        _, h, w = cfg.grid
        grid = (cfg.chunk_token_frames, h, w)
        return StreamState([b.init_state(batch, grid, device, dtype) for b in self.blocks],
                           torch.zeros((), dtype=torch.int64, device=device), StreamReuse(self))

    def forward_chunk(self, x_chunk, sigma, step_size, text_emb, text_mask, state: StreamState
                      ) -> tuple[torch.Tensor, StreamState]:
        """Velocity of one chunk (B, C, chunk_frames, H, W) given the committed past, and the
        state that would follow if this very input were committed; ``state`` is unchanged."""
        if x_chunk.shape[2] != self.config.chunk_frames:
            raise ValueError(f"a chunk has {self.config.chunk_frames} latent frames "
                             f"(config.chunk_frames), got {x_chunk.shape[2]}")
        return self._run(x_chunk, sigma, step_size, text_emb, text_mask, causal=True, state=state)

    def commit_chunk(self, x_chunk, text_emb, text_mask, state: StreamState, *,
                     sigma: float | torch.Tensor = 0.0, noise: torch.Tensor | None = None
                     ) -> StreamState:
        """Advance the state by a finished (clean) chunk, seen at noise level ``sigma`` with d = 0.

        At sigma > 0 the chunk is first noised to (1 - sigma) x + sigma noise (DESIGN 4.1) with
        the caller's ``noise`` (B, C, chunk_frames, H, W): the label and the input agree, and
        the caller keys the noise (counter-based), so the same seed gives the same bytes.
        """
        b = x_chunk.shape[0]
        sig = torch.as_tensor(sigma, dtype=x_chunk.dtype, device=x_chunk.device).expand(b)
        noised = sigma > 0 if isinstance(sigma, (int, float)) else bool((sig > 0).any())  # a float: no device sync
        if noised:
            if noise is None:
                raise ValueError("commit_chunk at sigma > 0 needs the context noise (noise=...)")
            x_chunk = (1 - sig.view(b, 1, 1, 1, 1)) * x_chunk + sig.view(b, 1, 1, 1, 1) * noise
        return self.forward_chunk(x_chunk, sig, torch.zeros_like(sig), text_emb, text_mask, state)[1]

    def save_pretrained(self, url: str) -> None:
        """safetensors weights + JSON config into the folder ``url`` (any fsspec URL)."""
        io.save_pretrained(self, url)

    @classmethod
    def from_pretrained(cls, url: str, device: str | torch.device = "cpu") -> S2DiT:
        return io.load_pretrained(cls, url, device)

    def block_costs(self, frames: int | None = None) -> list[dict]:
        """[{index, block, params, flops}] per block (see io.block_costs)."""
        return io.block_costs(self, frames)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
