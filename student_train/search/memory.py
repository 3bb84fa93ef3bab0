"""Peak memory of a piece of work, on any device.

CUDA: the caching allocator's own peak counter. Elsewhere (CPU, MPS): a dispatch mode that adds
up the storage bytes of every tensor an operator returns and subtracts them when the tensor is
freed, which is the activation memory the allocator would have to provide.
"""

from __future__ import annotations

import weakref
from typing import Self

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode


class _LiveBytes(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._owned: dict[int, int] = {}  # storage address -> bytes

    def _free(self, key: int) -> None:
        self.live -= self._owned.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in pytree.tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if size == 0 or key in self._owned:  # a view of memory already counted
                continue
            self._owned[key] = size
            self.live += size
            self.peak = max(self.peak, self.live)
            weakref.finalize(tensor, self._free, key)
        return out


class PeakMemory:
    """``with PeakMemory(device) as m: work()`` then ``m.peak_bytes``: the largest amount of
    memory allocated during the block beyond what was allocated before it."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.peak_bytes = 0

    def __enter__(self) -> Self:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._mode = _LiveBytes()
            self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._mode.__exit__(*exc)
            self.peak_bytes = self._mode.peak
