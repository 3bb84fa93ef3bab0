"""Streaming state of the block-causal student (DESIGN 5).

Per block: LCHA carries its linear-attention sums S (B,H,d,d), z (B,H,d) and the conv's last
kt - 1 input frames (B,kt-1,h,w,D); SSA carries its key/value cache of past chunks (growing when
ssa_window is None, else a fixed ring plus a validity mask). ``frame_offset`` is the absolute
index of the next token frame (a 0-d int64 tensor, so an exported program takes it as input).

The state is a value: the model never mutates it. ``forward_chunk`` returns the velocity and
the state that *would* follow if this chunk were committed; self-forcing denoises a chunk with
several calls against the same state, then advances it explicitly with ``commit_chunk`` on the
finished (clean or lightly re-noised) chunk. ``reuse`` (not a tensor, never flattened) is the
stream's memo of text- and (sigma, d)-derived tensors (reuse.py): a cache of pure functions of
the inputs, shared by the states of one stream, which a pass without grad reads and fills.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .reuse import StreamReuse


@dataclass
class StreamState:
    blocks: list[dict[str, torch.Tensor]]  # per-block carried tensors
    frame_offset: torch.Tensor  # () int64: token frames already committed
    reuse: StreamReuse | None = None  # None: every pass computes everything (an exported step)

    @property
    def chunks_seen(self) -> int:
        return int(self.frame_offset)

    def flatten(self) -> tuple[list[torch.Tensor], list[tuple[int, str]]]:
        """Tensors in a fixed order and their (block, key) names; frame_offset comes first."""
        names = [(-1, "frame_offset")] + [(i, key) for i, blk in enumerate(self.blocks)
                                          for key in sorted(blk)]
        tensors = [self.frame_offset] + [self.blocks[i][k] for i, k in names[1:]]
        return tensors, names

    @classmethod
    def unflatten(cls, tensors, names, num_blocks: int) -> StreamState:
        blocks: list[dict[str, torch.Tensor]] = [{} for _ in range(num_blocks)]
        offset = None
        for tensor, (i, key) in zip(tensors, names):
            if i < 0:
                offset = tensor
            else:
                blocks[i][key] = tensor
        return cls(blocks, offset)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.flatten()[0])
