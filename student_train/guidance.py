"""Classifier-free guidance of a student at sampling: v = v_u + g (v_c - v_u) (DESIGN 4.1).

A student trained with conditioning dropout (``cond_dropout`` > 0) has an unconditional mode: the
same network given the unconditional (negative-prompt) embedding the teacher's ``v_uncond`` was
computed with. ``guided(model, g, null)`` returns the model itself for g = 1 (no guidance, the
outputs of an unguided sampler bit for bit), else a wrapper with the model's sampling interface
(``__call__``, ``forward_chunk``, ``commit_chunk``, ``init_stream_state``, ``config``) that runs the
conditional and the unconditional rows as one doubled batch: rows 0..B-1 the prompts', rows
B..2B-1 the null text's. A streaming state then holds both halves, each committed with its
own text, so the unconditional branch streams on its own context as it was trained.
"""

from __future__ import annotations

import torch

NullText = tuple[torch.Tensor, torch.Tensor]  # ((L, D) or (1 or B, L, D), its (…, L) bool mask)


def _rows(t: torch.Tensor, b: int, length: int, rank: int) -> torch.Tensor:
    """``t`` (L0, ...) or (1 or B, L0, ...) as (B, length, ...) of ``rank`` dims, zero-padded
    along L (a mask pads with False)."""
    if t.dim() == rank - 1:
        t = t.unsqueeze(0)  # one null text for every row
    t = t.expand(b, *t.shape[1:])
    pad = length - t.shape[1]
    if pad > 0:
        t = torch.cat([t, t.new_zeros(b, pad, *t.shape[2:])], dim=1)
    return t


class Guided:
    """The guided velocity of ``model`` (see the module docstring); g != 1."""

    def __init__(self, model, guidance: float, null: NullText):
        self.model, self.guidance, self.config = model, float(guidance), model.config
        self.null_text, self.null_mask = null
        self._last: tuple = ()  # (text, mask, their versions, the doubled pair)

    def _text(self, text: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The doubled (prompts', null's) text and mask, the same tensors while the same
        unmodified inputs come back (every pass of a stream): the model's per-stream reuse
        matches an input off CPU only by being the same tensor (student_train/model/reuse.py)."""
        if text.is_inference() or mask.is_inference():  # no version counter: nothing to tell a change by
            return self._doubled(text, mask)
        versions = (text._version, mask._version)
        if self._last and self._last[0] is text and self._last[1] is mask and self._last[2] == versions:
            return self._last[3]
        doubled = self._doubled(text, mask)
        self._last = (text, mask, versions, doubled)
        return doubled

    def _doubled(self, text: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = text.shape[0]
        length = max(text.shape[1], self.null_text.shape[-2])
        null_text = _rows(self.null_text.to(text.device, text.dtype), b, length, 3)
        null_mask = _rows(self.null_mask.to(mask.device), b, length, 2)
        return (torch.cat([_rows(text, b, length, 3), null_text]),  # (2B, L, D)
                torch.cat([_rows(mask, b, length, 2), null_mask]))  # (2B, L)

    def _combine(self, v: torch.Tensor) -> torch.Tensor:
        v_c, v_u = v.chunk(2)
        return v_u + self.guidance * (v_c - v_u)

    def __call__(self, x, sigma, step_size, text, text_mask, *, causal: bool = False):
        two = lambda t: torch.cat([t, t])
        return self._combine(self.model(two(x), two(sigma), two(step_size),
                                        *self._text(text, text_mask), causal=causal))

    def forward_chunk(self, x, sigma, step_size, text, text_mask, state):
        two = lambda t: torch.cat([t, t])
        v, after = self.model.forward_chunk(two(x), two(sigma), two(step_size),
                                            *self._text(text, text_mask), state)
        return self._combine(v), after

    def commit_chunk(self, x, text, text_mask, state, *, sigma=0.0, noise=None):
        two = lambda t: None if t is None else torch.cat([t, t])
        return self.model.commit_chunk(two(x), *self._text(text, text_mask), state, sigma=sigma,
                                       noise=two(noise))

    def init_stream_state(self, batch: int, **kwargs):
        return self.model.init_stream_state(2 * batch, **kwargs)


def guided(model, guidance: float = 1.0, null: NullText | None = None):
    """``model`` itself for guidance 1, else its ``Guided`` wrapper (``null`` required)."""
    if guidance == 1.0:
        return model
    if null is None:
        raise ValueError(f"guidance {guidance} needs the unconditional (null) text embedding")
    return Guided(model, guidance, null)


def check_guidance(guidance: float, trained_dropout: float, what: str) -> None:
    """Refuse guidance != 1 for a model trained without conditioning dropout (it has no
    unconditional mode: v_u would be an untrained extrapolation)."""
    if guidance == 1.0:
        return
    if not guidance > 0:
        raise ValueError(f"guidance must be > 0 (1 = off), got {guidance}")
    if not trained_dropout > 0:
        raise ValueError(f"guidance {guidance} needs a student trained with conditioning dropout, "
                         f"and {what} was trained with cond_dropout = 0 (it has no unconditional "
                         "mode): sample it with guidance 1, or train with [train] cond_dropout "
                         "(e.g. 0.1; for S2DiT-AR also [train_ar] cond_dropout in its causal phase)")
