"""The self-forcing rollout (DESIGN 6, stage 2): the block-causal student generates a video chunk
by chunk with its own finished chunks as context, on S2DiT-KD's few-step schedule.

Each chunk starts from its noise at sigmas[0] and takes Euler jumps with d = the jump, as the
KD few-step sampler does. At a random *exit step* k the chunk stops: its sample is the exit
step's x0-estimate x_k - sigma_k u_k, and only that one network call carries a gradient
(earlier steps and the commit run under no_grad), as in Self-Forcing. The Euler jump with u_k
equals "predict x0 = x_k - sigma_k u_k, re-noise deterministically to sigma_{k+1}", so the
exit step trains exactly the call that sampling makes at step k; at the last step (sigma 0)
the x0-estimate *is* the sampled chunk. The finished chunk is then committed to the stream
state (detached, at ``context_sigma``), the context of the next chunk.
"""

from __future__ import annotations

import numpy as np
import torch

from cache_schema import flow

_EXIT_KEY = 0x5E1F  # separates exit-step draws from every other keyed stream


def exit_steps(seed: int, step: int, num_chunks: int, num_steps: int, *, per_chunk: bool,
               stream: int = 0) -> list[int]:
    """Exit step of every chunk for one rollout batch, keyed by (seed, training step, stream).

    One draw serves the whole batch (a per-row exit would need a gradient through every step);
    keyed by the step, not by rows, so that every rank of a data-parallel run and a resumed run
    draw the same exits. ``stream`` tells the generator's rollout (0) from extra critic ones.
    """
    rng = np.random.default_rng([seed, step, stream, _EXIT_KEY])
    if per_chunk:
        return [int(k) for k in rng.integers(0, num_steps, size=num_chunks)]
    return [int(rng.integers(0, num_steps))] * num_chunks


def rollout(model, noise: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
            sigmas: list[float], exits: list[int], *, context_sigma: float = 0.0,
            context_noise: torch.Tensor | None = None, grad: bool = True) -> torch.Tensor:
    """Generate (B, C, F, H, W) from ``noise`` (B, C, F, H, W) chunk by chunk.

    sigmas: the few-step schedule ending at 0 (N + 1 values); exits[i] in [0, N): the exit step
    of chunk i. With ``grad`` the result carries a gradient through the exit-step calls only.
    context_noise (B, C, F, H, W): the noise finished chunks are committed with at
    ``context_sigma`` > 0 (keyed per row by the caller; unused at 0).
    """
    b, _, frames, _, _ = noise.shape
    cf = model.config.chunk_frames
    if frames % cf:
        raise ValueError(f"{frames} latent frames are not whole chunks of {cf}")
    if len(exits) != frames // cf or not all(0 <= k < len(sigmas) - 1 for k in exits):
        raise ValueError(f"need one exit step in [0, {len(sigmas) - 1}) per chunk "
                         f"({frames // cf} chunks), got {exits}")
    full = lambda value: torch.full((b,), value, device=noise.device, dtype=noise.dtype)
    with torch.no_grad():
        state = model.init_stream_state(b, device=noise.device, dtype=noise.dtype)
    chunks = []
    for i, start in enumerate(range(0, frames, cf)):
        x = noise[:, :, start : start + cf]  # (B, C, cf, H, W)
        for k in range(exits[i] + 1):
            s, s_next = float(sigmas[k]), float(sigmas[k + 1])
            exiting = k == exits[i]
            with torch.set_grad_enabled(grad and exiting):
                u, _ = model.forward_chunk(x, full(s), full(s - s_next), text, text_mask, state)
                if exiting:
                    x = flow.x0_from_velocity(x, s, u)  # the exit step's x0-estimate
                else:
                    x = flow.euler_step(x, s, s_next, u)
        chunks.append(x)
        if start + cf == frames:
            break  # nothing follows the last chunk
        with torch.no_grad():  # the context of the next chunk: the finished chunk, detached
            ctx_noise = None if context_noise is None else context_noise[:, :, start : start + cf]
            state = model.commit_chunk(x.detach(), text, text_mask, state, sigma=context_sigma,
                                       noise=ctx_noise)
    return torch.cat(chunks, dim=2)
