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

from student_train.export import check_exportable, export_chunk_step, max_abs_difference
from student_train.model.bounded import (
    bounded_memory,
    check_past_chunks,
    trained_window,
    windowed_lcha,
)
from student_train.model.lcha import ring_key
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


# -- LCHA's sums windowed (windowed_lcha) ---------------------------------------------------------

@pytest.mark.parametrize("layout", [("lcha", "ssa:1", "lcha"), ("lin", "lcha")])
def test_windowed_lcha_is_the_unbounded_stream_while_the_window_holds_the_past_and_not_after(layout):
    model = random_model(latent_frames=6, latent_height=8, latent_width=8, patch=(1, 2, 2), layout=layout)
    noise, text, mask = _inputs(model, 6)
    sigmas = [1.0, 0.6, 0.3, 0.0]
    with torch.no_grad():
        unbounded = sample_streaming(model, noise, text, mask, sigmas)
        held = sample_streaming(windowed_lcha(model, 4), noise, text, mask, sigmas)  # sink + 4 + current
        short = sample_streaming(windowed_lcha(model, 1), noise, text, mask, sigmas)
        sink_only = sample_streaming(windowed_lcha(model, 0), noise, text, mask, sigmas)
    assert torch.allclose(unbounded, held, atol=1e-5, rtol=1e-4)
    assert torch.allclose(unbounded[:, :, :3], short[:, :, :3], atol=1e-5, rtol=1e-4)  # sink, 1, current
    assert not torch.allclose(unbounded[:, :, 3:], short[:, :, 3:], atol=1e-3, rtol=1e-2)
    assert torch.allclose(unbounded[:, :, :2], sink_only[:, :, :2], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(short[:, :, 3:], sink_only[:, :, 3:], atol=1e-3, rtol=1e-2)
    with torch.no_grad():  # a whole-clip pass never reads the streaming sums
        sigma, d = torch.tensor([0.5]), torch.tensor([0.0])
        whole = [m(noise, sigma, d, text, mask, causal=True) for m in (model, windowed_lcha(model, 1))]
    assert torch.equal(*whole)
    with pytest.raises(ValueError, match="window >= 0"):
        windowed_lcha(model, -1)


def test_windowed_lcha_state_is_fixed_size_and_exports():
    model = random_model(ssa_window=2, layout=("lcha", "ssa:1", "lcha"))
    windowed = windowed_lcha(model, 2)
    assert windowed.config.lcha_window == 2 and model.config.lcha_window is None
    state = windowed.init_stream_state(2)
    assert state.blocks[0]["s"].shape == model.init_stream_state(2).blocks[0]["s"].shape  # the total
    ring = sorted(key for key in state.blocks[0] if "_ring" in key)
    assert ring == [ring_key(sums, i) for sums in "sz" for i in range(2)]  # W slots of each
    step = export_chunk_step(windowed, batch=2, text_len=5)
    assert max_abs_difference(step, windowed, chunks=6) <= 1e-5  # the ring filled and rolled


@pytest.mark.parametrize("window", [0, 2])
def test_windowed_lcha_total_is_the_sink_plus_the_last_chunks(window):
    """The running total of the first block (whose sums depend on each chunk's own input only)
    after n chunks is chunk 0's share plus the last `window` chunks': with U(n) the unbounded
    stream's sums, U(0) + U(n) - U(n - window), up to the last bits of adding and subtracting."""
    model = random_model(latent_frames=4, latent_height=8, latent_width=8, patch=(1, 2, 2),
                         layout=("lcha", "ssa:1", "lcha"))
    windowed = windowed_lcha(model, window)
    noise, text, mask = _inputs(model, 9)
    chunks = noise.split(model.config.chunk_frames, dim=2)
    unbounded, kept = [], []
    with torch.no_grad():
        states = [model.init_stream_state(1), windowed.init_stream_state(1)]
        for chunk in chunks:
            states = [m.commit_chunk(chunk, text, mask, s) for m, s in zip((model, windowed), states)]
            unbounded.append(states[0].blocks[0])
            kept.append(states[1].blocks[0])
    for n in range(1, len(chunks)):
        for key in ("s", "z"):
            expected = unbounded[0][key] + unbounded[n][key] - unbounded[max(n - window, 0)][key]
            assert torch.allclose(kept[n][key], expected, atol=1e-5, rtol=1e-5), (n, key)
        if window:  # the ring holds the last `window` chunks' shares apart, oldest first
            newest = unbounded[n]["s"] - unbounded[n - 1]["s"]
            assert torch.allclose(kept[n][ring_key("s", window - 1)], newest, atol=1e-5, rtol=1e-5)


def test_a_model_without_lcha_sums_is_left_as_it_is():
    from student_train.model.bounded import has_lcha_sums, long_stream

    attention = random_model(layout=("ssa:1", "ssa:1"))
    conv = random_model(layout=("conv", "ssa:1"))
    assert not has_lcha_sums(attention) and not has_lcha_sums(conv)
    assert long_stream(attention, lcha_window="trained") is attention and long_stream(conv, lcha_window=2) is conv
    assert has_lcha_sums(random_model(layout=("lin", "ssa:1")))
    assert long_stream(conv, ssa_window=2, lcha_window=2).config.lcha_window is None


@pytest.mark.parametrize("value", [None, "trained", 0, 13])
def test_a_window_a_stream_can_keep_passes_the_check_unchanged(value):
    assert check_past_chunks(value, "--lcha-window") == value


@pytest.mark.parametrize("value", [-1, True, "all", 2.5])
def test_a_window_no_stream_can_keep_is_refused_naming_the_setting(value):
    with pytest.raises(ValueError, match=r"\[sample\] lcha_window must be a number of past chunks "
                                         r"\(>= 0\) or 'trained', got"):
        check_past_chunks(value, "[sample] lcha_window")
