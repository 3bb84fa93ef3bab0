"""S2DiT: the sandwich diffusion transformer, bidirectional or block-causal, and streaming.

forward:      x (B,C,F,H,W), sigma (B,), step_size (B,), text (B,L,D), mask (B,L) -> v (B,C,F,H,W)
forward_chunk: one chunk of latent frames against the carried StreamState (does not advance it)
commit_chunk:  run a finished chunk through the model to append its context to the state
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import fsspec
import torch
import torch.nn.functional as F
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from .blocks import MixContext, SandwichBlock
from .config import StudentConfig
from .embeddings import ScalarEmbedding, modulate

WEIGHTS, CONFIG = "model.safetensors", "config.json"


@dataclass
class StreamState:
    blocks: list[dict] = field(default_factory=list)  # per-block carried tensors
    frame_offset: int = 0  # token frames already committed


class S2DiT(nn.Module):
    def __init__(self, config: StudentConfig):
        super().__init__()
        self.config = cfg = config
        self.patch_embed = nn.Conv3d(cfg.latent_channels, cfg.dim, cfg.patch, stride=cfg.patch)
        self.sigma_embed = ScalarEmbedding(cfg.dim)
        self.step_embed = ScalarEmbedding(cfg.dim)  # d = 0: instantaneous velocity; d > 0: a jump
        self.text_pool = nn.Linear(cfg.text_dim, cfg.dim)
        self.blocks = nn.ModuleList(
            SandwichBlock(spec, cfg.dim, cfg.heads, cfg.text_dim, cfg.mlp_ratio, cfg.conv_kernel,
                          cfg.ssa_window) for spec in cfg.layout)
        self.final_norm = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Linear(cfg.dim, 2 * cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.latent_channels * cfg.patch[0] * cfg.patch[1] * cfg.patch[2])
        for zero in (self.final_ada, self.head):
            nn.init.zeros_(zero.weight)
            nn.init.zeros_(zero.bias)

    @property
    def chunk_token_frames(self) -> int:
        return max(1, self.config.chunk_frames // self.config.patch[0])

    def _condition(self, sigma, step_size, text, mask):
        weights = mask.to(text.dtype)[..., None]
        pooled = self.text_pool((text * weights).sum(1) / weights.sum(1).clamp(min=1))  # (B, D)
        return self.sigma_embed(sigma) + self.step_embed(step_size) + pooled, pooled

    def _tokens(self, x):
        tokens = self.patch_embed(x)  # (B, D, f, h, w)
        grid = tuple(tokens.shape[2:])
        return tokens.flatten(2).transpose(1, 2), grid  # (B, T, D)

    def _unpatchify(self, tokens, cond, grid):
        cfg = self.config
        shift, scale = self.final_ada(F.silu(cond)).chunk(2, dim=-1)
        out = self.head(modulate(self.final_norm(tokens), shift, scale))  # (B, T, C*pf*ph*pw)
        b = out.shape[0]
        f, h, w = grid
        pf, ph, pw = cfg.patch
        out = out.view(b, f, h, w, cfg.latent_channels, pf, ph, pw)
        out = out.permute(0, 4, 1, 5, 2, 6, 3, 7)  # (B, C, f, pf, h, ph, w, pw)
        return out.reshape(b, cfg.latent_channels, f * pf, h * ph, w * pw)

    def _run(self, x, sigma, step_size, text, mask, ctx_causal, state: StreamState | None):
        tokens, grid = self._tokens(x)
        cond, pooled = self._condition(sigma, step_size, text, mask)
        tokens = tokens + pooled[:, None]
        ctx = MixContext(grid=grid, causal=ctx_causal, chunk_token_frames=self.chunk_token_frames,
                         frame_offset=state.frame_offset if state else 0)
        new_blocks = []
        for i, block in enumerate(self.blocks):
            tokens, block_state = block(tokens, cond, text, mask, ctx,
                                        state.blocks[i] if state else None)
            new_blocks.append(block_state)
        new_state = StreamState(new_blocks, ctx.frame_offset + grid[0]) if state else None
        return self._unpatchify(tokens, cond, grid), new_state

    def forward(self, x, sigma, step_size, text_emb, text_mask, *, causal: bool = False):
        if causal and x.shape[2] % self.config.chunk_frames:
            raise ValueError(f"{x.shape[2]} latent frames are not whole chunks of {self.config.chunk_frames}")
        return self._run(x, sigma, step_size, text_emb, text_mask, causal, None)[0]

    def init_stream_state(self, batch: int, device=None, dtype=torch.float32) -> StreamState:
        cfg = self.config
        grid = (self.chunk_token_frames, cfg.latent_height // cfg.patch[1], cfg.latent_width // cfg.patch[2])
        return StreamState([b.mixer.init_state(batch, grid, device, dtype) for b in self.blocks], 0)

    def forward_chunk(self, x_chunk, sigma, step_size, text_emb, text_mask, state: StreamState):
        """Velocity of one chunk given the committed past; the state is not advanced."""
        return self._run(x_chunk, sigma, step_size, text_emb, text_mask, True, state)[0]

    def commit_chunk(self, x_chunk, sigma, step_size, text_emb, text_mask, state: StreamState
                     ) -> StreamState:
        """Append a chunk's context (e.g. the finished clean chunk at sigma 0) to the state."""
        return self._run(x_chunk, sigma, step_size, text_emb, text_mask, True, state)[1]

    # -- persistence: safetensors weights + JSON config, on any fsspec URL ---------------------
    def save_pretrained(self, url: str) -> None:
        fs, root = fsspec.core.url_to_fs(url)
        fs.makedirs(root, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        fs.pipe_file(f"{root}/{WEIGHTS}", save_safetensors(tensors))
        fs.pipe_file(f"{root}/{CONFIG}", json.dumps(self.config.to_json(), indent=1).encode())

    @classmethod
    def from_pretrained(cls, url: str, device="cpu") -> "S2DiT":
        fs, root = fsspec.core.url_to_fs(url)
        try:
            config = StudentConfig.from_json(json.loads(fs.cat_file(f"{root}/{CONFIG}")))
            weights = load_safetensors(fs.cat_file(f"{root}/{WEIGHTS}"))
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{url} holds no S2DiT ({CONFIG} + {WEIGHTS}): {exc}") from None
        model = cls(config)
        model.load_state_dict(weights)
        return model.to(device)

    def block_costs(self) -> list[dict]:
        """Parameters and forward FLOPs (multiply-adds x2) per block at the configured size."""
        cfg = self.config
        f, h, w = cfg.grid
        tokens, dim, hd = f * h * w, cfg.dim, cfg.dim // cfg.heads
        rows = []
        for spec, block in zip(cfg.layout, self.blocks):
            params = sum(p.numel() for p in block.parameters())
            dense = 2 * tokens * (params - sum(p.numel() for p in block.cross.kv.parameters())
                                  - sum(p.numel() for p in block.ada.parameters()))
            if block.kind == "lcha":
                mix = 2 * tokens * cfg.heads * hd * hd * 3  # S accumulation, numerator, features
            else:
                reduced = tokens // block.stride**2
                mix = 2 * 2 * reduced * reduced * dim
            rows.append({"block": spec, "params": params, "flops": dense + mix})
        return rows
