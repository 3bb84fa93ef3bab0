"""What one streamed chunk of a student costs: seconds measured on this machine, FLOPs counted.

A chunk's cost is the work between two finished chunks of ``StudentCheckpoint.chunks``: the
previous chunk committed to the streaming state, then the few-step denoising of this one (what
a phone does per chunk). It depends on the chunk's position when a mixer keeps an unbounded
state (SSA's KV cache without ``ssa_window``) and not when the state is bounded (LCHA's sums,
the conv's last frames, a window), so seconds are kept per position and summarised as the mean
of chunks 1-5 (chunk 0 pays for allocations) and of the last 5 (the steady state a clip of that
length reaches; ``last5_s`` is what the comparison calls the per-chunk latency).

``steady_chunk_seconds`` times only that steady state, cheaply: the chunks before it are given
(random frames, teacher-forced) and committed without being denoised, one forward each instead
of the few-step passes + the commit, which leaves the streaming state of the same shapes as the
full stream's (the cost of a dense network does not depend on the values); the timed chunks run
through the same sampler as ``chunk_seconds``'s. ``chunk_flops`` reaches the last chunk the same
way (a count depends on shapes only).

Clip lengths are multiples of the trained one (``length`` 4: 4x the latent frames). Inputs are
random (the cost of a dense network does not depend on the values); text is ``TEXT_TOKENS``
tokens. With ``guidance`` != 1 a chunk is the guided one (student_train/guidance.py: the prompt's
and the null text's rows as one doubled batch), the null text random too. FLOPs are torch's FlopCounterMode count of one chunk for one stream (batch 1) at the
clip's last position: matmuls, convolutions and attention; elementwise work (norms,
activations, linear attention's feature maps, softmax) is not counted; attention is counted as
torch counts it on a GPU (its two matmuls), also for the CPU kernel torch leaves out.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .student import StudentCheckpoint

TEXT_TOKENS = 8


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    del args, out_shape, kwargs
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# torch's counter has formulas for the GPU attention kernels only: SDPA on a CPU runs this one,
# which it would count as zero (the whole cost of SSA's growing KV cache)
CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}
SUMMARY_CHUNKS = 5  # chunks averaged at the start and at the end of a stream


def _stream(student: StudentCheckpoint, length: int, batch: int, seed: int = 0,
            guidance: float = 1.0, given: int = 0) -> Iterator[torch.Tensor]:
    """The chunks of a ``length``x clip for ``batch`` streams, sampled lazily; the first
    ``given`` chunks are random frames committed without denoising (teacher-forced)."""
    cfg = student.model.config
    shape = (batch, cfg.latent_channels, cfg.latent_frames * length, cfg.latent_height, cfg.latent_width)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(shape, generator=generator)  # (B, C, F * length, H, W)
    text = torch.randn(batch, TEXT_TOKENS, cfg.text_dim, generator=generator)  # (B, L, D)
    mask = torch.ones(batch, TEXT_TOKENS, dtype=torch.bool)
    null = None
    if guidance != 1.0:
        null = (torch.randn(TEXT_TOKENS, cfg.text_dim, generator=generator), mask[0])  # (L, D), (L,)
    forced = noise[:, :, : given * cfg.chunk_frames].clone() if given else None  # (B, C, given * cf, H, W)
    return student.chunks(noise, text, mask, student.plan["schedule_sigmas"], streaming=True,
                          guidance=guidance, null=null, forced=forced)


def clip_chunks(student: StudentCheckpoint, length: int) -> int:
    """Chunks of one ``length``x stream."""
    cfg = student.model.config
    return cfg.latent_frames * length // cfg.chunk_frames


def chunk_seconds(student: StudentCheckpoint, length: int, *, batch: int = 16,
                  guidance: float = 1.0) -> list[float]:
    """Seconds of each chunk of one ``length``x stream of ``batch`` clips, in order."""
    return _seconds_between(_stream(student, length, batch, guidance=guidance))


def _seconds_between(chunks: Iterator[torch.Tensor]) -> list[float]:
    """Seconds each chunk of a lazily sampled stream took to come."""
    seconds, start = [], time.perf_counter()
    for _ in chunks:
        now = time.perf_counter()
        seconds.append(now - start)
        start = now
    return seconds


def steady_chunk_seconds(student: StudentCheckpoint, length: int, *, batch: int = 16,
                         guidance: float = 1.0, chunks: int = SUMMARY_CHUNKS, warmup: int = 1) -> list[float]:
    """Seconds of each of the last ``chunks`` chunks of one ``length``x stream of ``batch``
    clips (what ``chunk_seconds(...)[-chunks:]`` times), the chunks before them committed
    without denoising; ``warmup`` chunks before the timed ones are denoised and not timed (the
    sampler's first few-step passes of a stream pay for allocations)."""
    count = clip_chunks(student, length)
    timed = min(chunks, count)
    given = max(0, count - timed - warmup)
    return _seconds_between(_stream(student, length, batch, guidance=guidance, given=given))[-timed:]


def summarise(passes: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Several passes of ``chunk_seconds`` over the same stream -> the median per position,
    then the means of its first and last ``SUMMARY_CHUNKS`` (the first chunk left out of the
    start), their ratio (about 1 when the cost stays flat) and the mean over every chunk."""
    per_chunk = [statistics.median(values) for values in zip(*passes, strict=True)]
    n = SUMMARY_CHUNKS
    first = per_chunk[1:n + 1] or per_chunk
    last = per_chunk[-n:]
    first_s, last_s = sum(first) / len(first), sum(last) / len(last)
    return {"chunks": len(per_chunk), "passes": len(passes), "mean_s": sum(per_chunk) / len(per_chunk),
            "first5_s": first_s, "last5_s": last_s, "flat_ratio": last_s / max(first_s, 1e-9)}


def chunk_costs(checkpoint: str | StudentCheckpoint, lengths: Sequence[int] = (1, 4), *,
                batch: int = 16, repeats: int = 1) -> dict[str, dict[str, Any]]:
    """``summarise`` of ``repeats`` passes at each length, keyed ``"{length}x"``, for a
    checkpoint (a training folder: its newest) or a loaded student."""
    student = checkpoint if isinstance(checkpoint, StudentCheckpoint) else StudentCheckpoint.load(checkpoint)
    return {f"{m}x": summarise([chunk_seconds(student, m, batch=batch) for _ in range(repeats)])
            for m in lengths}


def chunk_flops(student: StudentCheckpoint, length: int, *, guidance: float = 1.0) -> int:
    """FLOPs of the last chunk of one ``length``x stream (batch 1): its commit of the chunk
    before it and its few-step denoising."""
    count = clip_chunks(student, length)
    chunks = _stream(student, length, batch=1, guidance=guidance, given=count - 1)
    for _ in range(count - 1):  # given: committed, not denoised
        next(chunks)
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        next(chunks)
    return int(counter.get_total_flops())
