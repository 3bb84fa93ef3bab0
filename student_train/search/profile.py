"""Measure each block option on the device at hand: latency and peak memory -> a LUT (JSON).

The LUT is what the DP search budgets against: per option (``lcha``, ``ssa:1``, ``ssa:2``...)
the median forward latency of one block at the configured resolution, width and batch, and
its memory (parameters + the largest activation set seen in the forward).
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import torch

from ..model.blocks import MixContext, SandwichBlock
from ..model.config import StudentConfig


def _activation_bytes(block, x, cond, text, mask, ctx) -> int:
    sizes: list[int] = []

    def hook(_module, _inputs, output):
        out = output[0] if isinstance(output, tuple) else output
        if torch.is_tensor(out):
            sizes.append(out.numel() * out.element_size())

    handles = [m.register_forward_hook(hook) for m in block.modules()]
    with torch.no_grad():
        block(x, cond, text, mask, ctx)
    for h in handles:
        h.remove()
    return sum(sizes)


def profile_blocks(config: StudentConfig, options: list[str], *, batch: int = 1, repeats: int = 20,
                   device: str = "cpu") -> dict[str, Any]:
    f, h, w = config.grid
    tokens = f * h * w
    x = torch.randn(batch, tokens, config.dim, device=device)
    cond = torch.randn(batch, config.dim, device=device)
    text = torch.randn(batch, 8, config.text_dim, device=device)
    mask = torch.ones(batch, 8, dtype=torch.bool, device=device)
    ctx = MixContext(grid=(f, h, w))
    rows = {}
    for spec in options:
        block = SandwichBlock(spec, config.dim, config.heads, config.text_dim, config.mlp_ratio,
                              config.conv_kernel).to(device).eval()
        times = []
        with torch.no_grad():
            for i in range(repeats + 3):
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                block(x, cond, text, mask, ctx)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                if i >= 3:  # warm-up excluded
                    times.append((time.perf_counter() - t0) * 1000)
        params = sum(p.numel() * p.element_size() for p in block.parameters())
        rows[spec] = {"latency_ms": statistics.median(times),
                      "memory_mb": (params + _activation_bytes(block, x, cond, text, mask, ctx)) / 2**20}
    return {"device": device, "batch": batch, "tokens": tokens, "config": config.to_json(),
            "torch": torch.__version__, "options": rows}


def save_lut(lut: dict[str, Any], path: str) -> None:
    import fsspec

    with fsspec.open(path, "w") as handle:
        json.dump(lut, handle, indent=1)
