"""Cached text embeddings as model input: zero-padded (B, L, D) and a (B, L) mask (both stages),
and conditioning dropout: rows whose text is replaced by the unconditional embedding."""

from __future__ import annotations

import numpy as np
import torch

NULL_TEXT = "neg_text_emb"  # the unconditional embedding the teacher's v_uncond was computed with


def pad_text(records: list[dict], max_text_len: int, key: str = "text_emb"
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The records' text embeddings (``key``: the prompt's, or ``NULL_TEXT``) zero-padded to
    (B, L, D) float32, and the (B, L) bool mask."""
    if key == NULL_TEXT and any(key not in r for r in records):
        raise ValueError(f"a cache record holds no {key}: conditioning dropout needs the "
                         "teacher's unconditional (negative-prompt) embedding in every record")
    b, dim = len(records), records[0][key].shape[1]
    text = torch.zeros(b, max_text_len, dim)
    mask = torch.zeros(b, max_text_len, dtype=torch.bool)
    for i, r in enumerate(records):
        length = r[key].shape[0]
        text[i, :length] = torch.from_numpy(r[key].astype(np.float32))
        mask[i, :length] = True
    return text, mask


def drop_text(text: torch.Tensor, mask: torch.Tensor, null: tuple[torch.Tensor, torch.Tensor],
              drop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(text, mask) with the rows where ``drop`` (B,) bool is set replaced by ``null``'s."""
    null_text, null_mask = null
    return (torch.where(drop.view(-1, 1, 1), null_text, text),
            torch.where(drop.view(-1, 1), null_mask, mask))
