"""Cached text embeddings as model input: zero-padded (B, L, D) and a (B, L) mask (both stages)."""

from __future__ import annotations

import numpy as np
import torch


def pad_text(records: list[dict], max_text_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The records' text embeddings zero-padded to (B, L, D) float32, and the (B, L) bool mask."""
    b, dim = len(records), records[0]["text_emb"].shape[1]
    text = torch.zeros(b, max_text_len, dim)
    mask = torch.zeros(b, max_text_len, dtype=torch.bool)
    for i, r in enumerate(records):
        length = r["text_emb"].shape[0]
        text[i, :length] = torch.from_numpy(r["text_emb"].astype(np.float32))
        mask[i, :length] = True
    return text, mask
