"""A trained student streamed with constant memory: every SSA block keeps a ring of ``window``
past chunks and, by default, the first chunk as a sink at its own place, frame 0 (as a model
trained with ``ssa_sink`` sees it); ``sink="adjacent"`` re-positions the sink next to the ring
(StreamingLLM's positions), ``"none"`` keeps the ring alone.

A student trained with an unbounded KV cache (configs/memory.toml's S2DiT) grows its cache by a
chunk per chunk streamed, and its queries meet keys at distances its training clip never had.
Bounded, the cost and memory per chunk are those of window + 2 chunks however long the stream
(and the chunk step can be exported, which needs fixed shapes), and a window of at most the
trained chunks minus 2 keeps every query-key distance but the sink's one the model was trained
at ("adjacent": every one). LCHA's state is a fixed size already and is left as it is by
``bounded_memory``; ``windowed_lcha`` windows LCHA's sums the same way (sink + last chunks).

Measured on the memory task (BENCHMARKS "Bounded memory", tune noise, 3 seeds, recall at 4x the
trained length): 0.80 as trained. SSA bounded to the trained length loses recall whatever the
sink: 0.72 with the sink at its first place, 0.70 with the ring alone (not separated from
"first", which is ahead on the weakest seed only), 0.45 re-positioned next to the ring, the
worst on every seed. LCHA's sums windowed to the trained length (SSA as trained) gain: 0.89,
the weak seed 0.55 -> 0.82, the others within 0.005, contrast and amplitude better on every
seed: what fades past the trained length is the first chunk's share of LCHA's sums.
"""

from __future__ import annotations

import dataclasses

from .sandwich import S2DiT


def trained_window(model: S2DiT) -> int:
    """The widest window whose every query-key distance (sink included) was trained: the clip's
    chunks minus the current chunk and the sink."""
    cfg = model.config
    return max(cfg.latent_frames // cfg.chunk_frames - 2, 0)


SINKS = ("first", "adjacent", "none")


def has_lcha_sums(model: S2DiT) -> bool:
    """Whether a block streams LCHA's linear-attention sums (an "lcha" or "lin" block)."""
    return any(block.kind in ("lcha", "lin") for block in model.blocks)


def long_stream(model: S2DiT, *, ssa_window: int | str | None = None, sink: str = "first",
                lcha_window: int | str | None = None) -> S2DiT:
    """``model`` for streams longer than its trained clip: SSA bounded to ``ssa_window`` past
    chunks with ``sink`` (``bounded_memory``), LCHA's sums windowed to ``lcha_window``
    (``windowed_lcha``; a model without LCHA's linear attention has no sums to window and is
    left as it is); "trained" for either: ``trained_window``; None: as trained. A new module
    with the same weights when anything changes, ``model`` itself otherwise."""
    changes = {}
    if ssa_window is not None:
        if sink not in SINKS:
            raise ValueError(f"sink must be one of {SINKS}, got {sink!r}")
        changes.update(ssa_window=_past(model, ssa_window, "a bounded stream"), ssa_sink=sink != "none",
                       ssa_sink_adjacent=sink == "adjacent")
    if lcha_window is not None and has_lcha_sums(model):
        changes["lcha_window"] = _past(model, lcha_window, "a windowed LCHA")
    if not changes:
        return model
    param = next(model.parameters())
    rebuilt = S2DiT(dataclasses.replace(model.config, **changes)).to(device=param.device, dtype=param.dtype)
    rebuilt.load_state_dict(model.state_dict())
    return rebuilt.train(model.training)


def check_past_chunks(value, what: str) -> int | str | None:
    """``value`` if it is a window a stream can keep: a number of past chunks >= 0, "trained"
    (``trained_window``) or None (as trained); else a ValueError naming ``what`` (a flag, a
    config key)."""
    if value is None or value == "trained" or (
            isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise ValueError(f"{what} must be a number of past chunks (>= 0) or 'trained', got {value!r}")


def _past(model: S2DiT, window: int | str, what: str) -> int:
    past = trained_window(model) if window == "trained" else int(window)
    if past < 0:
        raise ValueError(f"{what} keeps window >= 0 past chunks, got {window}")
    return past


def bounded_memory(model: S2DiT, window: int | str, sink: str = "first") -> S2DiT:
    """The same weights with ``ssa_window = window`` and a sink as ``sink`` says (a new module;
    ``model`` is unchanged). Only streaming changes: a whole-clip pass of the bounded model
    masks to the window, which the unbounded model was not trained with."""
    return long_stream(model, ssa_window=window, sink=sink)


def windowed_lcha(model: S2DiT, window: int | str) -> S2DiT:
    """The same weights with ``lcha_window = window`` (a new module): LCHA's streaming sums keep
    the first chunk and the last ``window`` chunks, so past the trained length the first chunk's
    share is what training gave it instead of a share diluted by every frame since. While the
    stream is within ``window`` + 2 chunks it is the unbounded stream; whole-clip passes are
    unchanged. Memory: (1 + window) times LCHA's sums, constant however long the stream."""
    return long_stream(model, lcha_window=window)
