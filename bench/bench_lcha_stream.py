"""LCHA's streaming fast paths against the formulation they replaced (issue 26), old/new ratios
measured in one run, old and new runs in pairs (which goes first alternating), medians.

1. one streamed chunk of the memory-task S2DiT (4 denoising steps + the commit, the state of a
   4x stream: 40 chunks committed), at batch 16 and batch 1;
2. the first LCHA mixer alone on one streamed frame: forward at batch 16 and 1, forward +
   backward at batch 32; and its conv alone, forward + backward at batch 32;
3. one stage-2 causal-phase training step (teacher_forcing_loss, forward + backward, batch 32,
   15 one-frame chunks).

The old formulation lives here only (``old_formulation``: the per-tap conv over every padded
frame, one chunk's linear attention as einsums, RoPE tables rebuilt every pass);
tests/student_train/test_lcha_streaming_paths.py checks the product against it bit for bit, and
so does every run of this bench.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_lcha_stream.py [--repeats 61]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from unittest import mock

import torch
import torch.nn.functional as F

from student_train.model import S2DiT, StudentConfig, blocks, lcha
from student_train.model.lcha import linear_attention
from student_train.self_forcing.causal import CausalBatch, teacher_forcing_loss

# the memory task's student (configs/memory.toml): a 2x2 token grid per latent frame
MEMORY_TASK = StudentConfig(latent_frames=15, latent_height=8, latent_width=8, patch=(1, 4, 4),
                            dim=96, heads=4, layout=("lcha", "ssa:1", "ssa:1", "lcha"), text_dim=32)


def reference_conv(frames: torch.Tensor, past: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """lcha.causal_depthwise_conv as it was at d5d4115: one conv2d per temporal tap
    over every padded frame, then the frames that tap feeds sliced out."""
    b, f, h, w, c = frames.shape
    kt, kh, kw = weight.shape[1:]
    padded = torch.cat([past, frames], dim=1)  # (B, F + kt - 1, H, W, C)
    fp = padded.shape[1]
    ph, pw = kh // 2, kw // 2
    prepad = h < kh or w < kw
    if prepad:
        padded_hw = F.pad(padded, (0, 0, pw, pw, ph, ph))
        planes = padded_hw.view(b * fp, h + 2 * ph, w + 2 * pw, c).permute(0, 3, 1, 2)
    else:
        planes = padded.view(b * fp, h, w, c).permute(0, 3, 1, 2)
    out = None
    for i in range(kt):
        y = F.conv2d(planes, weight[:, i, None], None, padding=0 if prepad else (ph, pw), groups=c)
        y = y.permute(0, 2, 3, 1).view(b, fp, h, w, c)[:, i : i + f]
        out = y if out is None else out + y
    return out + bias, padded[:, fp - (kt - 1):]


def reference_linear_attention(fq_rot, fq, fk_rot, fk, v, *, chunks=1, past=None):
    """lcha.linear_attention as it was at d5d4115 for one chunk: einsums."""
    if chunks != 1:
        return linear_attention(fq_rot, fq, fk_rot, fk, v, chunks=chunks, past=past)
    s = torch.einsum("bthd,bthe->bhde", fk_rot, v)
    z = fk.sum(1)  # (B, H, d)
    if past is not None:
        s, z = s + past[0], z + past[1]
    num = torch.einsum("bthd,bhde->bthe", fq_rot, s)
    den = torch.einsum("bthd,bhd->bth", fq, z)
    return num / (den[..., None] + lcha.EPS), (s, z)


@contextlib.contextmanager
def old_formulation():
    """The model as it ran before: the reference conv and linear attention, and RoPE tables
    rebuilt in every pass."""
    with mock.patch.object(lcha, "causal_depthwise_conv", reference_conv), \
            mock.patch.object(lcha, "linear_attention", reference_linear_attention), \
            mock.patch.object(blocks, "_offset_key", lambda offset: None):
        yield


def memory_model(seed: int = 0) -> S2DiT:
    torch.manual_seed(seed)
    model = S2DiT(MEMORY_TASK)
    for p in model.parameters():  # adaLN-zero init would make every block the identity
        p.data.normal_(0, 0.05)
    return model


def chunk_step(model: S2DiT, batch: int, committed: int = 40):
    """One streamed chunk at ``batch``: 4 forward_chunk calls and the commit (no grad)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 4, 1, 8, 8, generator=g)
    text, mask = torch.randn(batch, 8, 32, generator=g), torch.ones(batch, 8, dtype=torch.bool)
    sigma, d = torch.full((batch,), 0.5), torch.full((batch,), 0.25)
    with torch.no_grad():
        state = model.init_stream_state(batch)
        for _ in range(committed):
            state = model.commit_chunk(x, text, mask, state)

    def run():
        blocks._rope_across_passes.cache_clear()  # a new chunk's offset: its first pass builds them
        with torch.no_grad():
            v = [model.forward_chunk(x, sigma, d, text, mask, state)[0] for _ in range(4)]
            return v + model.commit_chunk(x, text, mask, state).flatten()[0]
    return run


def train_step(model: S2DiT, batch: int = 32, states: int = 25):
    """One causal-phase step of stage 2: teacher_forcing_loss forward + backward."""
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(batch, 4, 15, 8, 8, generator=g)
    data = CausalBatch(
        x0=x0, states=torch.randn(batch, states, *x0.shape[1:], generator=g).half(), jump_x0=x0,
        pairs=False, sigmas=torch.linspace(1, 0, states).expand(batch, states).contiguous(),
        text=torch.randn(batch, 8, 32, generator=g), text_mask=torch.ones(batch, 8, dtype=torch.bool),
        u=torch.rand(batch, 3, 15, generator=g), eps=torch.randn(x0.shape, generator=g),
        context_noise=torch.randn(x0.shape, generator=g))

    def run():
        model.zero_grad(set_to_none=True)
        loss, _ = teacher_forcing_loss(model, data, schedule=[0, 6, 12, 18], context_sigma=0.1,
                                       jump_fraction=0.5, jump_first_chunk=False, sigma_shift=3.0)
        loss.backward()
        return [loss] + [p.grad for p in model.parameters()]
    return run


def mixer_step(model: S2DiT, batch: int, grad: bool):
    """The first LCHA mixer on one streamed frame (2x2 tokens) with a random state: forward, or
    forward + backward through the input and the state (as stage 2's causal phase)."""
    g = torch.Generator().manual_seed(4)
    mixer = model.blocks[0].mixer
    x, cond = torch.randn(batch, 4, 96, generator=g), torch.randn(batch, 96, generator=g)
    state = {k: torch.randn(v.shape, generator=g) for k, v in mixer.init_state(batch, (1, 2, 2)).items()}
    offset = torch.tensor(7)

    def run():
        ctx = blocks.MixContext(grid=(1, 2, 2), cond=cond, text_bias=None, head_dim=24, causal=True,
                                frame_offset=offset)  # a new pass: its tables from the cache
        with torch.set_grad_enabled(grad):
            leaves = [x.requires_grad_(grad)] + [t.requires_grad_(grad) for t in state.values()]
            out, new = mixer(x, ctx, state)
            if not grad:
                return [out, *new.values()]
            (out.square().sum() + sum(t.sum() for t in new.values())).backward()
            grads = [t.grad.clone() for t in leaves]
            for t in leaves:
                t.grad = None
            return [out.detach(), *grads]
    return run


def conv_step(batch: int = 32, grid: int = 2, dim: int = 96):
    """The conv of one streamed frame, forward + backward (what each LCHA runs per chunk)."""
    g = torch.Generator().manual_seed(3)
    frames, past = torch.randn(batch, 1, grid, grid, dim, generator=g), torch.randn(batch, 2, grid, grid, dim, generator=g)
    weight, bias = torch.randn(dim, 3, 3, 3, generator=g), torch.randn(dim, generator=g)

    def run():
        leaves = [t.detach().requires_grad_() for t in (frames, past, weight, bias)]
        out, tail = lcha.causal_depthwise_conv(*leaves)  # patched to the reference in old runs
        (out.square().sum() + tail.sum()).backward()
        return [out, tail] + [t.grad for t in leaves]
    return run


def compare(name: str, run, repeats: int, *, reference=old_formulation) -> float:
    """Old (under the context ``reference`` makes) and new formulation timed in pairs, which one
    goes first alternating (it measured slower here); the median of the per-pair ratios (the
    machine's load drifts slower than a pair), the ratio of the fastest runs and the median
    seconds. Checks equal bytes."""
    with reference():
        old_out = run()
    new_out = run()
    same = all(torch.equal(a, b) for a, b in zip(old_out, new_out, strict=True))
    times: dict[str, list[float]] = {"old": [], "new": []}
    for r in range(repeats):
        for kind in ("old", "new") if r % 2 else ("new", "old"):  # alternate who goes first
            with reference() if kind == "old" else contextlib.nullcontext():
                start = time.perf_counter()
                run()
                times[kind].append(time.perf_counter() - start)
    ratio = statistics.median(n / o for o, n in zip(times["old"], times["new"], strict=True))
    old, new = statistics.median(times["old"]), statistics.median(times["new"])
    fastest = min(times["new"]) / min(times["old"])  # load only adds time: a second estimate
    print(f"| {name} | {1e3 * old:.1f} | {1e3 * new:.1f} | {ratio:.2f} | {fastest:.2f} | "
          f"{'yes' if same else 'NO'} |", flush=True)
    if not same:
        raise SystemExit(f"{name}: the new path changed bits")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=61)
    args = parser.parse_args()
    model = memory_model()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")
    print("| case | old (ms) | new (ms) | new / old (median of pairs) | new / old (fastest) | same bytes |\n"
          "|---|---|---|---|---|---|")
    compare("streamed chunk, batch 16 (4 steps + commit, 4x position)", chunk_step(model, 16), args.repeats)
    compare("streamed chunk, batch 1", chunk_step(model, 1), args.repeats)
    compare("LCHA mixer, one streamed frame, batch 16", mixer_step(model, 16, False), args.repeats)
    compare("LCHA mixer, one streamed frame, batch 1", mixer_step(model, 1, False), args.repeats)
    compare("LCHA mixer, fwd + bwd, batch 32", mixer_step(model, 32, True), args.repeats)
    compare("conv of one streamed frame, fwd + bwd, batch 32", conv_step(), args.repeats)
    compare("stage-2 causal step, batch 32, 15 chunks, fwd + bwd", train_step(model),
            max(3, args.repeats // 3))  # seconds each


if __name__ == "__main__":
    main()
