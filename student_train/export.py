"""torch.export of the streaming chunk step (the road to mobile runtimes: ExecuTorch, ...).

The exported program is one pure function

    step(x_chunk, sigma, step_size, text_emb, text_mask, *state) -> (v_chunk, *next_state)

with the state flattened into tensors in ``StreamState.flatten`` order (the names are stored
next to the program). A runtime calls it with the same state for each denoising step of a chunk
and keeps ``next_state`` of the call on the finished chunk (sigma 0 or the context noise,
step_size 0) - the eager model's forward_chunk / commit_chunk contract. Static shapes need a
fixed-size state, so SSA blocks need ``ssa_window`` set (a ring of that many past chunks).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import fsspec
import torch
from torch import nn

from .model import S2DiT
from .model.streaming import StreamState


class ChunkStep(nn.Module):
    """S2DiT.forward_chunk over flat state tensors (export-friendly signature)."""

    def __init__(self, model: S2DiT, state_names: list[tuple[int, str]]):
        super().__init__()
        self.model = model
        self.state_names = state_names

    def forward(self, x_chunk, sigma, step_size, text_emb, text_mask, *state: torch.Tensor):
        stream = StreamState.unflatten(state, self.state_names, len(self.model.blocks))
        v, nxt = self.model.forward_chunk(x_chunk, sigma, step_size, text_emb, text_mask, stream)
        return (v, *nxt.flatten()[0])


@dataclass
class ExportedStep:
    program: torch.export.ExportedProgram
    state_names: list[tuple[int, str]]
    example_args: tuple[torch.Tensor, ...]

    def __call__(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.program.module()(*args)


def check_exportable(model: S2DiT) -> None:
    if model.config.ssa_window is None and any(b.kind == "ssa" for b in model.blocks):
        raise ValueError("exporting the chunk step needs a fixed-size SSA cache: set ssa_window "
                         "(past chunks kept, e.g. 4) in the student config; with None the KV cache "
                         "grows every chunk and so would the program's input shapes")


def export_chunk_step(model: S2DiT, *, batch: int = 1, text_len: int = 16,
                      past_chunks: int = 1) -> ExportedStep:
    """Export the chunk step at a fixed batch and text length; the example state has seen
    ``past_chunks`` chunks (any number gives the same shapes once the window is fixed)."""
    check_exportable(model)
    model = model.eval()
    cfg = model.config
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cfg.latent_channels, cfg.chunk_frames, cfg.latent_height, cfg.latent_width,
                    generator=g).to(device, dtype)
    text = torch.randn(batch, text_len, cfg.text_dim, generator=g).to(device, dtype)
    mask = torch.ones(batch, text_len, dtype=torch.bool, device=device)
    sigma = torch.full((batch,), 0.5, device=device, dtype=dtype)
    d = torch.zeros(batch, device=device, dtype=dtype)
    state = model.init_stream_state(batch, device, dtype)
    with torch.no_grad():
        for _ in range(past_chunks):
            state = model.commit_chunk(x, text, mask, state)
    tensors, names = state.flatten()
    wrapper = ChunkStep(model, names).eval()
    args = (x, sigma, d, text, mask, *tensors)
    with torch.no_grad():
        program = torch.export.export(wrapper, args)
    return ExportedStep(program, names, args)


def max_abs_difference(step: ExportedStep, model: S2DiT, chunks: int = 4, seed: int = 1) -> float:
    """Run exported and eager chunk steps side by side for ``chunks`` chunks (each denoised
    once, then committed) and return the largest absolute difference of any output."""
    x, sigma, d, text, mask, *_ = step.example_args
    g = torch.Generator().manual_seed(seed)
    state_e = model.init_stream_state(x.shape[0], x.device, x.dtype)
    flat = list(state_e.flatten()[0])
    worst = 0.0
    module = step.program.module()
    with torch.no_grad():
        for _ in range(chunks):
            xc = torch.randn(x.shape, generator=g).to(x.device, x.dtype)
            v_e, _ = model.forward_chunk(xc, sigma, d, text, mask, state_e)
            v_x, *_ = module(xc, sigma, d, text, mask, *flat)
            worst = max(worst, (v_e - v_x).abs().max().item())
            zero = torch.zeros_like(sigma)
            state_e = model.commit_chunk(xc, text, mask, state_e)
            _, *flat = module(xc, zero, zero, text, mask, *flat)
            for a, b in zip(state_e.flatten()[0], flat):
                worst = max(worst, (a.double() - b.double()).abs().max().item() if a.numel() else 0.0)
    return worst


def save_exported(step: ExportedStep, url: str) -> dict[str, Any]:
    """Write ``<url>`` (the .pt2 program) and ``<url>.json`` (state layout and inputs)."""
    with fsspec.open(url, "wb") as handle:
        torch.export.save(step.program, handle)
    meta = {"inputs": ["x_chunk", "sigma", "step_size", "text_emb", "text_mask", "*state"],
            "outputs": ["v_chunk", "*next_state"],
            "state": [{"block": i, "name": k, "shape": list(t.shape), "dtype": str(t.dtype)}
                      for (i, k), t in zip(step.state_names, step.example_args[5:])],
            "example_shapes": [list(t.shape) for t in step.example_args[:5]]}
    with fsspec.open(f"{url}.json", "w") as handle:
        json.dump(meta, handle, indent=1)
    return meta
