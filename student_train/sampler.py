"""Sampling the student: few-step (d = the jump) or full-step (d = 0) Euler over a schedule,
whole or chunk by chunk, optionally with classifier-free guidance (guidance.py: ``guidance`` g
and the ``null`` text; g = 1, the default, is the unguided sampler itself)."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator

import numpy as np
import torch

from cache_schema import flow

from .guidance import NullText, guided


@torch.no_grad()
def sample(model, noise: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
           sigmas: list[float], *, use_step_size: bool = True, causal: bool = False,
           guidance: float = 1.0, null: NullText | None = None) -> torch.Tensor:
    """Integrate from ``noise`` at sigmas[0] to sigmas[-1] (usually 0).

    use_step_size: condition on d = sigma_k - sigma_{k+1} (few-step, S2DiT-KD's jumps);
    False gives the instantaneous velocity (d = 0), for sampling on the teacher's grid.
    """
    model = guided(model, guidance, null)
    x = noise
    b = x.shape[0]
    for s, s_next in itertools.pairwise(sigmas):
        sig = torch.full((b,), s, device=x.device, dtype=x.dtype)
        d = torch.full((b,), (s - s_next) if use_step_size else 0.0, device=x.device, dtype=x.dtype)
        v = model(x, sig, d, text, text_mask, causal=causal)
        x = flow.euler_step(x, s, s_next, v)
    return x


def _with_chunk_frames(model, chunk_frames: int | None):
    """The model itself, or one sharing its weights that streams chunks of ``chunk_frames``
    (the weights do not depend on the chunk size; the streaming state's shapes do)."""
    if chunk_frames is None or chunk_frames == model.config.chunk_frames:
        return model
    other = type(model)(model.config.replace(chunk_frames=chunk_frames))
    other.load_state_dict(model.state_dict())
    p = next(model.parameters())
    return other.to(device=p.device, dtype=p.dtype).eval()


_CONTEXT_KEY = 0xC0E7  # context-noise stream, apart from every other keyed draw


def context_noise_like(noise: torch.Tensor) -> torch.Tensor:
    """Counter-based noise for committing finished chunks at context_sigma > 0, one stream per
    row keyed by the digest of that row's own initial noise (itself keyed by its sample id):
    a row gets the same context noise whatever batch it is sampled in. (B, C, F, H, W)"""
    rows = []
    for row in noise.detach().to("cpu", torch.float32).numpy():
        key = int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
        rows.append(np.random.default_rng([key, _CONTEXT_KEY]).standard_normal(row.shape,
                                                                              dtype=np.float32))
    return torch.from_numpy(np.stack(rows)).to(noise.device, noise.dtype)


@torch.no_grad()
def sample_streaming(model, noise: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                     sigmas: list[float], chunk_frames: int | None = None, *,
                     use_step_size: bool = True, context_sigma: float | None = 0.0,
                     context_noise: torch.Tensor | None = None,
                     forced: torch.Tensor | None = None, guidance: float = 1.0,
                     null: NullText | None = None) -> torch.Tensor:
    """Chunk by chunk with the streaming state: each chunk of ``chunk_frames`` latent frames
    (default: the model's) is integrated from sigmas[0] to sigmas[-1], then becomes context.

    context_sigma: a finished chunk is committed to the state at this noise level (0: clean,
    as deployed and as self-forcing trains, S2DiT-AR), noised with ``context_noise``
    (default: ``context_noise_like(noise)``). None: no commit; step k of a chunk sees
    step k of the chunks before it (one state per step), which equals sampling the whole clip
    at once in block-causal mode (``sample(..., causal=True)``), the diffusion-forcing view.

    forced: (B, C, N, H, W), N whole chunks fewer than the clip's: teacher forcing. Frames
    0..N-1 are not sampled but taken as given (e.g. the teacher's sample from the same noise),
    returned as they are and committed as context like any finished chunk; the student samples
    the rest from ``noise``. It tells the student's conditional given the true past apart from
    its exposure to its own past.
    """
    chunks = stream_chunks(model, noise, text, text_mask, sigmas, chunk_frames,
                           use_step_size=use_step_size, context_sigma=context_sigma,
                           context_noise=context_noise, forced=forced, guidance=guidance,
                           null=null)
    return torch.cat(list(chunks), dim=2)


@torch.no_grad()  # on a generator: around each resume, not the caller's code
def stream_chunks(model, noise: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                  sigmas: list[float], chunk_frames: int | None = None, *,
                  use_step_size: bool = True, context_sigma: float | None = 0.0,
                  context_noise: torch.Tensor | None = None,
                  forced: torch.Tensor | None = None, guidance: float = 1.0,
                  null: NullText | None = None) -> Iterator[torch.Tensor]:
    """``sample_streaming`` as a generator: yields each finished chunk (B, C, cf, H, W) as soon
    as it is done, so a consumer (a video decoder) can work while later chunks are sampled."""
    model = guided(_with_chunk_frames(model, chunk_frames), guidance, null)
    cf = model.config.chunk_frames
    b, _, frames, _, _ = noise.shape
    if frames % cf:
        raise ValueError(f"{frames} latent frames are not whole chunks of {cf} (chunk_frames)")
    n_forced = _forced_frames(forced, noise, cf, context_sigma)
    steps = list(itertools.pairwise(sigmas))
    fresh = lambda: model.init_stream_state(b, device=noise.device, dtype=noise.dtype)
    state = fresh()
    per_step = [fresh() for _ in steps] if context_sigma is None else None
    if context_sigma and context_noise is None:
        context_noise = context_noise_like(noise)
    full = lambda value: torch.full((b,), value, device=noise.device, dtype=noise.dtype)
    # the same sigma and d tensors at step k of every chunk: the state's reuse matches them at
    # a glance on any device (model/reuse.py)
    step_inputs = [(full(s), full((s - s_next) if use_step_size else 0.0)) for s, s_next in steps]
    for start in range(0, frames, cf):
        x = noise[:, :, start : start + cf]  # (B, C, cf, H, W)
        todo = steps
        if start < n_forced:  # teacher forcing: given, not sampled; committed like a finished chunk
            x, todo = forced[:, :, start : start + cf].to(noise.device, noise.dtype), ()
        for k, (s, s_next) in enumerate(todo):
            sig, d = step_inputs[k]
            v, after = model.forward_chunk(x, sig, d, text, text_mask,
                                           state if per_step is None else per_step[k])
            if per_step is not None:
                per_step[k] = after  # this step's input is the next chunk's step-k context
            x = flow.euler_step(x, s, s_next, v)
        yield x
        if per_step is None and start + cf < frames:
            ctx = None if not context_sigma else context_noise[:, :, start : start + cf]
            state = model.commit_chunk(x, text, text_mask, state, sigma=context_sigma, noise=ctx)


def _forced_frames(forced: torch.Tensor | None, noise: torch.Tensor, cf: int,
                   context_sigma: float | None) -> int:
    """How many leading frames ``forced`` gives (0 for None), after checking it fits the clip."""
    if forced is None:
        return 0
    frames = noise.shape[2]
    if forced.dim() != 5 or forced.shape[:2] != noise.shape[:2] or forced.shape[3:] != noise.shape[3:]:
        raise ValueError(f"forced frames {tuple(forced.shape)} do not fit the noise "
                         f"{tuple(noise.shape)}: (B, C, N, H, W) with the same B, C, H, W")
    n = forced.shape[2]
    if n % cf or n >= frames:
        raise ValueError(f"{n} forced frames must be whole chunks of {cf} (chunk_frames) and "
                         f"fewer than the clip's {frames}, leaving the student something to sample")
    if n and context_sigma is None:
        raise ValueError("forced frames are committed as context; context_sigma=None (one state "
                         "per step, no commit) has nowhere to put them")
    return n
