"""LCHA's fast paths give the same bytes as the formulation they replaced (issue 26): the conv
of a single streamed frame as one conv2d over the taps side by side, linear attention of one
chunk as matmuls, RoPE tables kept across passes. The reference (bench/bench_lcha_stream.py
``old_formulation``) is the per-tap conv over every padded frame, einsums, tables rebuilt in
every pass; outputs and gradients must be equal
(torch.equal), streaming (1- and 2-frame chunks), block-causal and bidirectional, on grids
smaller than the 3x3 kernel and larger."""

from __future__ import annotations

import pytest
import torch
from model_factory import random_model

from bench.bench_lcha_stream import old_formulation, reference_conv
from student_train.model import blocks
from student_train.model.lcha import causal_depthwise_conv

pytestmark = pytest.mark.usefixtures("one_thread")

GRIDS = {2: (1, 4, 4), 4: (1, 2, 2), 8: (1, 1, 1)}  # token grid side -> patch of an 8x8 latent


def _conv_with_grads(conv, frames, past, weight, bias):
    leaves = [t.detach().requires_grad_() for t in (frames, past, weight, bias)]
    out, tail = conv(*leaves)
    (out.square().sum() + tail.sum()).backward()
    return [out, tail] + [t.grad for t in leaves]


@pytest.mark.parametrize("side", [2, 4, 8])
@pytest.mark.parametrize("frames,streaming", [(1, True), (2, True), (5, False)])
def test_conv_equals_reference_with_gradients(side, frames, streaming):
    g = torch.Generator().manual_seed(side * 10 + frames)
    past = torch.randn(3, 2, side, side, 8, generator=g)
    args = (torch.randn(3, frames, side, side, 8, generator=g),
            past if streaming else torch.zeros_like(past),  # a clip starts from zeros
            torch.randn(8, 3, 3, 3, generator=g), torch.randn(8, generator=g))
    new, old = _conv_with_grads(causal_depthwise_conv, *args), _conv_with_grads(reference_conv, *args)
    assert all(torch.equal(a, b) for a, b in zip(new, old, strict=True))


def _run(model, mode: str) -> list[torch.Tensor]:
    """The velocity of a random clip (whole, or streamed chunk by chunk with grads through the
    state, as stage 2's causal phase does) and the gradient of every parameter."""
    g = torch.Generator().manual_seed(1)
    cfg = model.config
    x = torch.randn(2, cfg.latent_channels, cfg.latent_frames, 8, 8, generator=g)
    text, mask = torch.randn(2, 3, cfg.text_dim, generator=g), torch.ones(2, 3, dtype=torch.bool)
    sigma, d = torch.tensor([0.3, 0.8]), torch.tensor([0.0, 0.2])
    model.zero_grad(set_to_none=True)
    if mode == "stream":
        state, outs = model.init_stream_state(2), []
        for chunk in x.split(cfg.chunk_frames, dim=2):
            outs.append(model.forward_chunk(chunk, sigma, d, text, mask, state)[0])
            state = model.commit_chunk(chunk, text, mask, state, sigma=0.1, noise=torch.ones_like(chunk))
        v = torch.cat(outs, dim=2)
    else:
        v = model(x, sigma, d, text, mask, causal=mode == "causal")
    v.square().mean().backward()
    return [v.detach()] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("side", [2, 4, 8])
@pytest.mark.parametrize("mode,chunk_frames", [("stream", 1), ("stream", 2), ("causal", 1),
                                               ("causal", 2), ("bidirectional", 1)])
def test_model_equals_reference_with_gradients(side, mode, chunk_frames):
    model = random_model(latent_frames=4, latent_height=8, latent_width=8, patch=GRIDS[side],
                         chunk_frames=chunk_frames, layout=("lcha", "ssa:1", "lcha"))
    blocks._rope_across_passes.cache_clear()
    new = _run(model, mode)
    again = _run(model, mode)  # the RoPE tables now come from the cache
    with old_formulation():
        old = _run(model, mode)
    for a, b, c in zip(new, again, old, strict=True):
        assert torch.equal(a, c) and torch.equal(b, c)
