"""A trained student streamed with constant memory (model/bounded.py): SSA keeps a ring of W
past chunks plus the first chunk as a sink; re-rotated next to the ring ("adjacent"), a chunk's
output depends on what it sees and their relative places only, never on how long the stream has
run."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from model_factory import random_model

from student_train.export import check_exportable
from student_train.model.bounded import bounded_memory, trained_window
from student_train.sampler import sample_streaming

pytestmark = pytest.mark.usefixtures("one_thread")


def _inputs(model, chunks: int, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    x = torch.randn(1, cfg.latent_channels, chunks * cfg.chunk_frames, 8, 8, generator=g)
    text = torch.randn(1, 5, cfg.text_dim, generator=g)
    return x, text, torch.ones(1, 5, dtype=torch.bool)


def _last_velocity(model, chunks: list[torch.Tensor], text, mask) -> torch.Tensor:
    """Commit every chunk but the last, then the velocity of the last."""
    state = model.init_stream_state(1)
    for chunk in chunks[:-1]:
        state = model.commit_chunk(chunk, text, mask, state)
    sigma, d = torch.tensor([0.6]), torch.tensor([0.2])
    return model.forward_chunk(chunks[-1], sigma, d, text, mask, state)[0]


def _one_ssa_block(chunk_frames: int):
    # one block: a chunk's keys are a function of that chunk alone, so a shorter stream of the
    # same visible chunks gives the same keys
    return random_model(latent_frames=4 * chunk_frames, latent_height=8, latent_width=8, patch=(1, 2, 2),
                        chunk_frames=chunk_frames, layout=("ssa:1",))


@settings(max_examples=12, deadline=None, derandomize=True, database=None)
@given(window=st.integers(0, 3), extra=st.integers(1, 5), chunk_frames=st.sampled_from([1, 2]))
def test_a_chunk_sees_the_same_relative_places_however_long_the_stream(window, extra, chunk_frames):
    model = _one_ssa_block(chunk_frames)
    bounded = bounded_memory(model, window, sink="adjacent")
    x, text, mask = _inputs(model, window + 1 + extra)
    chunks = list(x.split(chunk_frames, dim=2))
    # the long stream's last chunk sees the sink, the last `window` chunks and itself; a fresh
    # stream of exactly those chunks puts them at the same relative places
    seen = [chunks[0], *chunks[len(chunks) - 1 - window:]]
    long, short = (_last_velocity(bounded, c, text, mask) for c in (chunks, seen))
    assert torch.allclose(long, short, atol=1e-5, rtol=1e-4), (long - short).abs().max()


def test_without_the_replacement_the_sink_drifts_away():
    """The check above can fail: the same window and sink at frame 0 (the training-time sink)
    gives the long stream's last chunk another output."""
    model = _one_ssa_block(1)
    bounded, at_zero = bounded_memory(model, 1, sink="adjacent"), bounded_memory(model, 1, sink="first")
    x, text, mask = _inputs(model, 6)
    chunks = list(x.split(1, dim=2))
    seen = [chunks[0], *chunks[-2:]]
    moved, kept = ((_last_velocity(m, chunks, text, mask) - _last_velocity(m, seen, text, mask)).abs().max()
                   for m in (bounded, at_zero))
    assert moved < 1e-5 and kept > 100 * moved and kept > 1e-4, (moved, kept)


@pytest.mark.parametrize("sink", ["first", "adjacent"])
@pytest.mark.parametrize("layout", [("lcha", "ssa:1", "lcha"), ("ssa:2", "lcha")])
def test_while_the_window_holds_the_whole_past_the_bounded_stream_is_the_unbounded(layout, sink):
    model = random_model(latent_frames=4, latent_height=8, latent_width=8, patch=(1, 2, 2), layout=layout)
    window = 2
    noise, text, mask = _inputs(model, window + 2)  # every chunk sees every earlier one
    sigmas = [1.0, 0.6, 0.3, 0.0]
    unbounded = sample_streaming(model, noise, text, mask, sigmas)
    bounded = sample_streaming(bounded_memory(model, window, sink), noise, text, mask, sigmas)
    assert torch.allclose(unbounded, bounded, atol=1e-5, rtol=1e-4)


def test_bounded_memory_is_a_new_model_with_a_fixed_size_state():
    model = random_model(latent_frames=15, latent_height=8, latent_width=8, patch=(1, 2, 2),
                         layout=("lcha", "ssa:1", "lcha"))
    with pytest.raises(ValueError, match="fixed-size SSA cache"):
        check_exportable(model)
    assert trained_window(model) == 13  # 15 chunks: the current, the sink and 13 between
    bounded = bounded_memory(model, trained_window(model))
    check_exportable(bounded)
    cfg = bounded.config
    assert (cfg.ssa_window, cfg.ssa_sink, cfg.ssa_sink_adjacent) == (13, True, False)
    assert model.config.ssa_window is None and not model.blocks[1].mixer.sink_adjacent
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), bounded.state_dict().values()))
    with pytest.raises(ValueError, match="window >= 0"):
        bounded_memory(model, -1)
    with pytest.raises(ValueError, match="sink must be one of"):
        bounded_memory(model, 2, sink="last")
    ring = bounded_memory(model, 2, sink="none").config
    adjacent = bounded_memory(model, 2, sink="adjacent").config
    assert (ring.ssa_sink, adjacent.ssa_sink, adjacent.ssa_sink_adjacent) == (False, True, True)
