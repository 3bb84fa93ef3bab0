"""S2DiT student benchmarks (DESIGN 5, 8; issue 6). Ratios measured in one run.

1. LCHA cost growth: latency (and FLOPs) of one LCHA mixer when the token count doubles,
   against full softmax attention (SSA with stride 1) at the same width: ~2x vs ~4x.
2. Streaming: per-chunk latency of chunk 16 against chunk 1 of a long stream (<= 1.15x), with
   the fixed SSA ring cache (ssa_window) and, for contrast, the unbounded cache.
3. FLOPs per generated frame: the streaming student (4 denoising steps + 1 commit per chunk)
   against a plain full-attention DiT of the same width and depth sampling the whole clip.
4. Training step: forward + backward + AdamW of a batch of 128 demo latents (4x5x8x8).

    .venv/bin/python bench/bench_student.py [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from student_train.model import S2DiT, StudentConfig
from student_train.model.blocks import MixContext, text_attention_bias
from student_train.model.lcha import LCHA
from student_train.model.ssa import SSA


def timed(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def flops(fn) -> int:
    # the math SDPA backend decomposes into matmuls the counter sees (fused CPU kernels are not counted)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def bench_token_growth(dim: int, frames: int, side: int, repeats: int) -> dict:
    torch.manual_seed(0)
    heads = 4
    lcha, full = LCHA(dim, heads).eval(), SSA(dim, heads, stride=1).eval()
    rows = {}
    for f in (frames, 2 * frames):
        grid = (f, side, side)
        x = torch.randn(1, f * side * side, dim)
        cond = torch.randn(1, dim)
        ctx = MixContext(grid=grid, cond=cond, text_bias=text_attention_bias(torch.ones(1, 1, dtype=torch.bool), cond.dtype),
                         head_dim=dim // heads)
        with torch.no_grad():
            rows[f] = {name: (timed(functools.partial(m, x, ctx), repeats), flops(functools.partial(m, x, ctx)))
                       for name, m in (("lcha", lcha), ("full", full))}
    t1, t2 = rows[frames], rows[2 * frames]
    tokens = frames * side * side
    print(f"\n1. token growth ({tokens} -> {2 * tokens} tokens, width {dim})")
    for name in ("lcha", "full"):
        print(f"   {name:5s}: {t1[name][0] * 1e3:8.1f} ms -> {t2[name][0] * 1e3:8.1f} ms   latency x{t2[name][0] / t1[name][0]:.2f}"
              f"   FLOPs x{t2[name][1] / t1[name][1]:.2f}")
    return {"lcha_latency_ratio": t2["lcha"][0] / t1["lcha"][0], "full_latency_ratio": t2["full"][0] / t1["full"][0],
            "lcha_flop_ratio": t2["lcha"][1] / t1["lcha"][1], "full_flop_ratio": t2["full"][1] / t1["full"][1]}


def _stream_config(window: int | None, height: int, width: int) -> StudentConfig:
    return StudentConfig(latent_channels=16, latent_frames=16, latent_height=height, latent_width=width,
                         dim=96, heads=4, text_dim=32, chunk_frames=1, ssa_window=window)


def bench_streaming(height: int, width: int, repeats: int) -> dict:
    print(f"\n2. streaming: per-chunk latency (latent 16x{height}x{width}, chunk = 1 latent frame)")
    out = {}
    for window in (4, None):
        torch.manual_seed(0)
        model = S2DiT(_stream_config(window, height, width)).eval()
        for p in model.parameters():
            p.data.normal_(0, 0.02)
        x = torch.randn(1, 16, 1, height, width)
        sigma, d = torch.full((1,), 0.5), torch.zeros(1)
        text, mask = torch.randn(1, 12, 32), torch.ones(1, 12, dtype=torch.bool)
        state = model.init_stream_state(1)
        per_chunk = []
        with torch.no_grad():
            for _ in range(16):
                per_chunk.append(timed(functools.partial(model.forward_chunk, x, sigma, d, text, mask, state), repeats))
                state = model.commit_chunk(x, text, mask, state)
        ratio = per_chunk[15] / per_chunk[0]
        label = f"window {window}" if window is not None else "unbounded cache"
        print(f"   {label:16s}: chunk 1 {per_chunk[0] * 1e3:6.2f} ms, chunk 8 {per_chunk[7] * 1e3:6.2f} ms, "
              f"chunk 16 {per_chunk[15] * 1e3:6.2f} ms   chunk16/chunk1 x{ratio:.3f}   "
              f"state {state.nbytes() / 2**20:.2f} MB")
        out[f"chunk16_over_chunk1_{'window' if window is not None else 'unbounded'}"] = ratio
    return out


def bench_flops_per_frame(height: int, width: int, frames: int, steps: int = 4) -> dict:
    torch.manual_seed(0)
    student = S2DiT(_stream_config(4, height, width)).eval()
    layout = student.config.layout
    dit = S2DiT(student.config.replace(layout=("ssa:1",) * len(layout), latent_frames=frames)).eval()
    text, mask = torch.randn(1, 12, 32), torch.ones(1, 12, dtype=torch.bool)
    sigma, d = torch.full((1,), 0.5), torch.zeros(1)
    with torch.no_grad():
        state = student.init_stream_state(1)
        xc = torch.randn(1, 16, 1, height, width)
        for _ in range(8):  # a warm stream: the ring cache is full
            state = student.commit_chunk(xc, text, mask, state)
        chunk = flops(lambda: student.forward_chunk(xc, sigma, d, text, mask, state))
        per_frame_student = chunk * (steps + 1) / student.config.chunk_frames  # + the commit pass
        xs = torch.randn(1, 16, frames, height, width)
        clip = flops(lambda: dit(xs, sigma, d, text, mask))
        per_frame_dit = clip * steps / frames
    print(f"\n3. FLOPs per generated frame ({steps} steps, latent 16x{height}x{width}, width 96, depth {len(layout)})")
    print(f"   student (streaming, {','.join(layout)}, +1 commit pass): {per_frame_student / 1e9:8.2f} GFLOP/frame")
    print(f"   full-attention DiT, {frames}-frame clip:                 {per_frame_dit / 1e9:8.2f} GFLOP/frame")
    print(f"   ratio DiT / student: x{per_frame_dit / per_frame_student:.2f}")
    return {"student_gflop_per_frame": per_frame_student / 1e9, "dit_gflop_per_frame": per_frame_dit / 1e9}


def bench_train_step(repeats: int) -> dict:
    print("\n4. training step, batch 128 of 4x5x8x8 latents (forward + backward + AdamW)")
    out = {}
    for dim in (64, 96):
        torch.manual_seed(0)
        model = S2DiT(StudentConfig(dim=dim))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        b = 128
        x, sigma, d = torch.randn(b, 4, 5, 8, 8), torch.rand(b), torch.rand(b)
        text, mask = torch.randn(b, 12, 32), torch.ones(b, 12, dtype=torch.bool)

        def step(causal=False, model=model, opt=opt, batch=(x, sigma, d, text, mask)):
            loss = model(*batch, causal=causal).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        bidir, causal = timed(step, repeats), timed(lambda: step(True), repeats)
        print(f"   dim {dim:3d} ({model.num_params() / 1e6:.2f}M params): {bidir * 1e3:6.0f} ms bidirectional, "
              f"{causal * 1e3:6.0f} ms block-causal")
        out[f"train_step_ms_dim{dim}"] = bidir * 1e3
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 7
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32")
    bench_token_growth(96, 2 if args.quick else 4, 32, repeats)
    bench_streaming(36, 64, repeats)
    bench_flops_per_frame(36, 64, 21)
    bench_train_step(3 if args.quick else 5)


if __name__ == "__main__":
    main()
