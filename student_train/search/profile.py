"""Measure each block kind and stride on the device at hand -> the search's look-up table.

For every option (``lcha``, ``ssa:<s>`` for each stride that divides the token grid) a single
sandwich block at the configured resolution and width is timed (median of ``repeats`` runs
after ``warmup``), its transient peak memory measured (search/memory.py) and its persistent
memory counted (parameters + streaming state). ``mode="chunk"`` measures the streaming step of
one chunk against a state that already holds ``past_chunks`` chunks (what a phone runs);
``mode="clip"`` a bidirectional forward of the whole clip. The cost outside the blocks (patch
embedding, conditioning, head) is measured once as ``fixed``.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fsspec
import torch

from ..model import S2DiT, StudentConfig
from ..model.blocks import MixContext, SandwichBlock, text_attention_bias
from .dp import Costs, Option
from .memory import PeakMemory

MB = 2**20


@dataclass(kw_only=True, slots=True)
class ProfileConfig:
    model: StudentConfig = dataclasses.field(default_factory=StudentConfig)
    strides: tuple[int, ...] | None = None  # SSA strides to measure (None: every valid one)
    mode: str = "chunk"  # "chunk" (streaming step) or "clip" (bidirectional clip)
    batch: int = 1
    past_chunks: int | None = None  # chunk mode, window None: cache size (None: clip - 1 chunk)
    text_len: int = 16
    warmup: int = 3
    repeats: int = 20
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("chunk", "clip"):
            raise ValueError(f"profile mode {self.mode!r}: use 'chunk' or 'clip'")
        if self.repeats < 1 or self.batch < 1:
            raise ValueError("repeats and batch must be >= 1")


def valid_strides(config: StudentConfig) -> list[int]:
    _, h, w = config.grid
    return [s for s in (1, 2, 4, 8, 16) if h % s == 0 and w % s == 0]


def _time(fn: Callable[[], Any], warmup: int, repeats: int, device: torch.device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *a: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _profile_block(spec: str, cfg: ProfileConfig, device, dtype) -> dict[str, Any]:
    mc = cfg.model
    torch.manual_seed(cfg.seed)
    block = SandwichBlock(spec, mc.dim, mc.heads, mc.dim, mc.mlp_ratio, mc.conv_kernel,
                          mc.ssa_window).to(device=device, dtype=dtype).eval()
    for p in block.parameters():  # non-degenerate (adaLN-zero would skip the work's outputs)
        p.data.normal_(0, 0.05)
    f, h, w = mc.grid
    frames = mc.chunk_token_frames if cfg.mode == "chunk" else f
    grid = (frames, h, w)
    b = cfg.batch
    tokens = torch.randn(b, frames * h * w, mc.dim, device=device, dtype=dtype)
    text = torch.randn(b, cfg.text_len, mc.dim, device=device, dtype=dtype)  # embedded text tokens
    mask = torch.ones(b, cfg.text_len, dtype=torch.bool, device=device)

    def ctx(offset=0):
        return MixContext(grid=grid, cond=torch.randn(b, mc.dim, device=device, dtype=dtype),
                          text_bias=text_attention_bias(mask, dtype), head_dim=mc.dim // mc.heads,
                          rope_theta=mc.rope_theta, causal=cfg.mode == "chunk",
                          chunk_token_frames=mc.chunk_token_frames, frame_offset=offset)

    state = None
    with torch.no_grad():
        if cfg.mode == "chunk":
            state = block.init_state(b, grid, device, dtype)
            chunks = mc.grid[0] // mc.chunk_token_frames
            past = cfg.past_chunks if cfg.past_chunks is not None else max(0, chunks - 1)
            if mc.ssa_window is not None:
                past = max(past, mc.ssa_window)  # fill the ring: the steady state
            for i in range(past):
                state = block(tokens, text, ctx(i * frames), state)[1]
        run_ctx = ctx(0)
        latency = _time(lambda: block(tokens, text, run_ctx, state), cfg.warmup, cfg.repeats, device)
        with PeakMemory(device) as peak:
            block(tokens, text, run_ctx, state)
    params = list(block.parameters())
    state_bytes = _bytes(state.values()) if state else 0
    return {"name": spec, "latency_ms": latency,
            "memory_mb": (_bytes(params) + state_bytes) / MB, "peak_mb": peak.peak_bytes / MB,
            "params": sum(p.numel() for p in params), "state_mb": state_bytes / MB}


def _profile_fixed(cfg: ProfileConfig, device, dtype) -> dict[str, float]:
    """Everything but the blocks: patch embedding, conditioning, final layer."""
    mc = cfg.model
    model = S2DiT(mc.replace(layout=("lcha",))).to(device=device, dtype=dtype).eval()
    frames = mc.chunk_frames if cfg.mode == "chunk" else mc.latent_frames
    x = torch.randn(cfg.batch, mc.latent_channels, frames, mc.latent_height, mc.latent_width,
                    device=device, dtype=dtype)
    sigma = torch.rand(cfg.batch, device=device, dtype=dtype)
    text = torch.randn(cfg.batch, cfg.text_len, mc.text_dim, device=device, dtype=dtype)
    mask = torch.ones(cfg.batch, cfg.text_len, dtype=torch.bool, device=device)

    def run():
        tokens, grid = model._patchify(x)
        cond, pooled = model._condition(sigma, sigma, model.text_embed(text), mask)
        return model._unpatchify(tokens + pooled[:, None], cond, grid)

    with torch.no_grad():
        latency = _time(run, cfg.warmup, cfg.repeats, device)
        with PeakMemory(device) as peak:
            run()
    fixed_params = [p for n, p in model.named_parameters() if not n.startswith("blocks.")]
    return {"latency_ms": latency, "memory_mb": _bytes(fixed_params) / MB, "peak_mb": peak.peak_bytes / MB}


def profile(cfg: ProfileConfig, progress: bool = True) -> dict[str, Any]:
    """Measure every option; returns the LUT (JSON-ready)."""
    from tqdm.auto import tqdm

    device, dtype = torch.device(cfg.device), getattr(torch, cfg.dtype)
    strides = cfg.strides or valid_strides(cfg.model)
    _, h, w = cfg.model.grid
    for s in strides:
        if h % s or w % s:
            raise ValueError(f"stride {s} does not divide the token grid {h}x{w}")
    specs = ["lcha"] + [f"ssa:{s}" for s in strides]
    options = [_profile_block(spec, cfg, device, dtype)
               for spec in tqdm(specs, desc="profile blocks", disable=not progress)]
    return {"device": str(device), "device_name": _device_name(device), "dtype": cfg.dtype,
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "mode": cfg.mode, "batch": cfg.batch, "repeats": cfg.repeats,
            "model": cfg.model.to_json(), "fixed": _profile_fixed(cfg, device, dtype),
            "options": options}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def save_lut(lut: dict[str, Any], url: str) -> None:
    with fsspec.open(url, "w") as handle:
        json.dump(lut, handle, indent=1)


def load_lut(url: str) -> dict[str, Any]:
    with fsspec.open(url, "r") as handle:
        lut = json.load(handle)
    if "options" not in lut or "fixed" not in lut:
        raise ValueError(f"{url} is not a block look-up table: make one with `s2dit profile --out ...`")
    return lut


def default_score(name: str) -> float:
    """Placeholder quality proxy per block kind (replace with proxy-training scores): LCHA 1.0;
    SSA falls with the stride, full attention (stride 1) a little above LCHA."""
    import math

    if name == "lcha":
        return 1.0
    stride = int(name.split(":")[1])
    return round(1.1 - 0.15 * math.log2(stride), 4)


def options_from_lut(lut: dict[str, Any], scores: dict[str, float] | None = None
                     ) -> tuple[list[Option], Costs]:
    scores = scores or {}
    options = [Option(o["name"], o["latency_ms"], o["memory_mb"],
                      float(scores.get(o["name"], default_score(o["name"]))), o["peak_mb"])
               for o in lut["options"]]
    fixed = lut["fixed"]
    return options, Costs(fixed_latency_ms=fixed["latency_ms"], fixed_memory_mb=fixed["memory_mb"],
                          fixed_peak_mb=fixed["peak_mb"])
