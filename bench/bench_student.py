"""S2DiT cost figures measured in one run (issue 6):

1. LCHA forward time when the token count doubles (linear: ~2x) next to full softmax
   attention of the same width (quadratic: ~4x);
2. per-chunk streaming latency of chunk 16 against chunk 1 (constant cost: ~1.0x);
3. FLOPs per generated latent frame of the student against a plain full-attention DiT of the
   same width and depth.

    .venv/bin/python bench/bench_student.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from student_train.model import S2DiT, StudentConfig
from student_train.model.blocks import MixContext
from student_train.model.lcha import LCHA


def timed(fn, repeats=7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def lcha_scaling(dim: int, frames: int, side: int) -> tuple[float, float]:
    lcha = LCHA(dim, 4).eval()
    qkv = torch.nn.Linear(dim, 3 * dim)

    def run_lcha(f):
        x = torch.randn(1, f * side * side, dim)
        return lambda: lcha(x, MixContext(grid=(f, side, side)))

    def run_full(f):
        x = torch.randn(1, f * side * side, dim)

        def go():
            q, k, v = qkv(x).view(1, -1, 3, 4, dim // 4).permute(2, 0, 3, 1, 4)
            return F.scaled_dot_product_attention(q, k, v)
        return go

    lin = timed(run_lcha(2 * frames)) / timed(run_lcha(frames))
    full = timed(run_full(2 * frames)) / timed(run_full(frames))
    return lin, full


@torch.no_grad()
def streaming_ratio(chunks: int) -> tuple[float, float]:
    cfg = StudentConfig(latent_frames=chunks, latent_height=16, latent_width=16, chunk_frames=1,
                        ssa_window=2)
    model = S2DiT(cfg).eval()
    text, mask = torch.randn(1, 8, cfg.text_dim), torch.ones(1, 8, dtype=torch.bool)
    sigma, d = torch.tensor([0.5]), torch.tensor([0.25])
    state = model.init_stream_state(1)
    latencies = []
    for c in range(chunks):
        x = torch.randn(1, cfg.latent_channels, 1, 16, 16)
        latencies.append(timed(lambda: model.forward_chunk(x, sigma, d, text, mask, state), repeats=5))
        state = model.commit_chunk(x, torch.zeros(1), torch.zeros(1), text, mask, state)
    return latencies[-1] / latencies[0], latencies[0]


def flops_ratio(frames: int, side: int) -> tuple[float, float]:
    cfg = StudentConfig(latent_frames=frames, latent_height=side, latent_width=64)
    student = sum(r["flops"] for r in S2DiT(cfg).block_costs())
    f, h, w = cfg.grid
    tokens, dim, depth = f * h * w, cfg.dim, len(cfg.layout)
    per_block_dense = 2 * tokens * (4 * dim * dim + 2 * dim * int(dim * cfg.mlp_ratio) + 2 * dim * dim)
    full = depth * (per_block_dense + 2 * 2 * tokens * tokens * dim)
    return full / frames / (student / frames), student / frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=96)
    parser.add_argument("--side", type=int, default=32, help="token rows/cols per frame")
    parser.add_argument("--frames", type=int, default=4, help="token frames (doubled once)")
    parser.add_argument("--chunks", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    lin, full = lcha_scaling(args.dim, args.frames, args.side)
    tokens = args.frames * args.side**2
    print(f"1. tokens {tokens} -> {2 * tokens}: LCHA time x{lin:.2f}, full attention x{full:.2f}")
    ratio, first = streaming_ratio(args.chunks)
    print(f"2. streaming chunk {args.chunks} / chunk 1 latency: {ratio:.3f} (chunk 1: {first * 1000:.1f} ms)")
    fr, per_frame = flops_ratio(21, 36)  # 81 frames at 288x512 -> 21 x 36 x 64 latents, patch 2x2
    print(f"3. FLOPs per latent frame at 21x36x64 latents: full-attention DiT / S2DiT = {fr:.1f}x "
          f"(S2DiT {per_frame / 1e9:.2f} GFLOP per frame)")


if __name__ == "__main__":
    main()
