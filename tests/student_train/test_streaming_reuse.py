"""The streaming sampler's savings give the same bytes as the formulation they replaced (session
15): a stream's passes share the text- and (sigma, d)-derived tensors (model/reuse.py), SSA's
sink case without grad keeps views. The reference
(bench/bench_stream.py ``old_stream``) computes everything in every pass; outputs and, where
stage 2 trains through the path, every gradient must be equal (torch.equal)."""

from __future__ import annotations

import pytest
import torch
from model_factory import random_model

from bench.bench_stream import old_stream
from student_train.model.reuse import NONE
from student_train.sampler import sample, sample_streaming
from student_train.self_forcing.rollout import rollout

pytestmark = pytest.mark.usefixtures("one_thread")

SIGMAS = [1.0, 0.8, 0.5, 0.2, 0.0]
WINDOWS = {"unbounded": (None, False), "window": (1, False), "window+sink": (1, True)}


def _model(chunk_frames: int, window: str, layout=("lcha", "ssa:1", "lcha")):
    ssa_window, ssa_sink = WINDOWS[window]
    return random_model(latent_frames=4, latent_height=8, latent_width=8, patch=(1, 2, 2),
                        chunk_frames=chunk_frames, layout=layout, ssa_window=ssa_window,
                        ssa_sink=ssa_sink)


def _inputs(model, batch: int = 2, frames: int = 8):
    g = torch.Generator().manual_seed(3)
    cfg = model.config
    noise = torch.randn(batch, cfg.latent_channels, frames, 8, 8, generator=g)
    text = torch.randn(batch, 5, cfg.text_dim, generator=g)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])[:batch]
    return noise, text, mask


def _both(run):
    new = run()
    with old_stream():
        old = run()
    return new, old


@pytest.mark.parametrize("window", list(WINDOWS))
@pytest.mark.parametrize("chunk_frames", [1, 2])
@pytest.mark.parametrize("context_sigma", [0.0, 0.1, None])
def test_streamed_samples_equal_the_old_formulation(window, chunk_frames, context_sigma):
    model = _model(chunk_frames, window)
    noise, text, mask = _inputs(model)
    new, old = _both(lambda: sample_streaming(model, noise, text, mask, SIGMAS,
                                              context_sigma=context_sigma))
    assert torch.equal(new, old)


@pytest.mark.parametrize("layout", [("lcha", "ssa:2", "ssa:1"), ("ssa:1", "lcha", "conv")])
def test_guided_and_forced_streams_equal_the_old_formulation(layout):
    """The doubled batch of classifier-free guidance (the text rebuilt each call: matched by
    value), teacher-forced frames, strided SSA, a conv-only LCHA (no fusion gate)."""
    model = _model(1, "window+sink", layout)
    noise, text, mask = _inputs(model)
    null = (torch.zeros(3, model.config.text_dim), torch.tensor([True, False, False]))
    forced = torch.randn(2, model.config.latent_channels, 2, 8, 8)
    new, old = _both(lambda: sample_streaming(model, noise, text, mask, SIGMAS, guidance=2.5,
                                              null=null, forced=forced, context_sigma=0.1))
    assert torch.equal(new, old)


@pytest.mark.parametrize("causal", [False, True])
def test_whole_clip_sampling_is_unchanged(causal):
    """Whole clips have no stream state: nothing is reused; the refactored pieces give the old
    bytes (block-causal and bidirectional)."""
    model = _model(1, "window+sink")
    noise, text, mask = _inputs(model, frames=4)
    new, old = _both(lambda: sample(model, noise, text, mask, SIGMAS, causal=causal))
    assert torch.equal(new, old)


def _teacher_forcing(model, noise, text, mask):
    """Stage 2's causal phase: every chunk's velocity and commit with grad through the state."""
    model.zero_grad(set_to_none=True)
    state, outs = model.init_stream_state(noise.shape[0]), []
    sigma, d = torch.tensor([0.3, 0.8]), torch.tensor([0.0, 0.2])
    for chunk in noise.split(model.config.chunk_frames, dim=2):
        outs.append(model.forward_chunk(chunk, sigma, d, text, mask, state)[0])
        state = model.commit_chunk(chunk, text, mask, state, sigma=0.1, noise=torch.ones_like(chunk))
    v = torch.cat(outs, dim=2)
    v.square().mean().backward()
    return [v.detach()] + [p.grad for p in model.parameters()]


def _self_forcing(model, noise, text, mask):
    """Stage 2's rollout: passes before the exit step and commits without grad, the exit with."""
    model.zero_grad(set_to_none=True)
    exits = [3, 0, 2, 1, 3, 1, 0, 2][: noise.shape[2] // model.config.chunk_frames]
    x = rollout(model, noise, text, mask, SIGMAS, exits, context_sigma=0.1,
                context_noise=torch.ones_like(noise))
    x.square().mean().backward()
    return [x.detach()] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("window", list(WINDOWS))
@pytest.mark.parametrize("chunk_frames", [1, 2])
@pytest.mark.parametrize("phase", [_teacher_forcing, _self_forcing])
def test_training_paths_equal_the_old_formulation_with_gradients(window, chunk_frames, phase):
    model = _model(chunk_frames, window).train()
    noise, text, mask = _inputs(model)
    new, old = _both(lambda: phase(model, noise, text, mask))
    assert len(new) > 1 and all(g is not None for g in new[1:])
    assert all(torch.equal(a, b) for a, b in zip(new, old, strict=True))


def test_a_stream_embeds_its_text_once_and_starts_anew_on_new_weights():
    """The reuse is real (one text embedding per stream), matched by bits, and forgets what it
    kept when a weight is written to (an optimizer step) or the text changes in place."""
    model = _model(1, "unbounded")
    noise, text, mask = _inputs(model)
    calls = []
    model.text_embed.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        sample_streaming(model, noise, text, mask, SIGMAS)
        assert len(calls) == 1  # 8 chunks x (4 steps + a commit), one embedding
        state = model.init_stream_state(2)
        x, sigma, d = noise[:, :, :1], torch.full((2,), 0.5), torch.full((2,), 0.25)
        first = model.forward_chunk(x, sigma, d, text, mask, state)[0]
        again = model.forward_chunk(x, sigma.clone(), d.clone(), text.clone(), mask.clone(), state)[0]
        assert len(calls) == 2 and torch.equal(first, again)  # equal bits match
        next(model.text_embed.parameters()).add_(0.5)  # the weights change mid-stream
        text.mul_(2)  # and so does the text, in place
        after = model.forward_chunk(x, sigma, d, text, mask, state)[0]
        assert len(calls) == 3
        state.reuse = None  # every pass computes everything (as an exported step's state)
        assert torch.equal(after, model.forward_chunk(x, sigma, d, text, mask, state)[0])
        assert not torch.equal(after, first)


def test_inference_mode_streams_equal_the_old_formulation():
    """Inference tensors keep no version counter (bench_chunk_cost streams in inference mode)."""
    model = _model(1, "window+sink")
    noise, text, mask = _inputs(model)
    with torch.inference_mode():
        new, old = _both(lambda: sample_streaming(model, noise, text, mask, SIGMAS, context_sigma=0.1))
    assert torch.equal(new, old)


def test_no_reuse_with_grad():
    model = _model(1, "unbounded")
    _, text, mask = _inputs(model)
    state = model.init_stream_state(2)
    sigma = torch.full((2,), 0.5)
    assert state.reuse.shared(model, text, mask, sigma, sigma) is NONE  # grad on: compute
    with torch.no_grad():
        assert state.reuse.shared(model, text, mask, sigma, sigma) is not NONE
        other = _model(1, "unbounded")  # the same weights, another model
        assert state.reuse.shared(other, text, mask, sigma, sigma) is NONE
