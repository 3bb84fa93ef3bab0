"""What the passes of one stream share: tensors derived from the text and from (sigma, d).

A streamed chunk takes about five passes (the denoising steps and the commit) with the same
text, and step k of every chunk has the same (sigma, d). Each pass used to embed and pool the
text, project it to every block's cross-attention keys and values, and map (sigma, d, text) to
every block's adaLN modulation, the fusion gates and the final layer's: the same bytes every
time (a fifth to a quarter of a stream's time on the memory task, bench/bench_stream.py; more
with guidance, whose doubled text is rebuilt in each call). ``StreamReuse`` keeps
them for one stream (``StreamState.reuse``, made by ``init_stream_state``), keyed by the inputs'
bits and the weights' versions, so a hit gives exactly what the pass would have computed.

Only without grad: a tensor computed once and used by several passes' graphs would sum its
gradients in another order (other bits), and one made without grad would carry none. Not while
tracing or compiling (the exported chunk step's state has no reuse), nor under a dispatch mode
such as torch's FLOP counter: streaming_cost.chunk_flops counts a chunk as every pass computing
everything (the figure the compare grid has recorded, the same whatever came before the chunk;
counted with reuse, text work would vanish from a chunk's FLOPs). Off CPU an input matches
only itself (the same tensor object, unmodified): comparing values there would wait for the
device; the sampler passes the same sigma and d tensors to step k of every chunk (a guided
stream's rebuilt text and a commit's sigma match on CPU only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


class Shared:
    """One pass's view: ``text(owner, make)`` / ``cond(owner, make)`` return what ``make()``
    returns, computed once per (text) / (text, sigma, d) of the stream when reusing, else each
    call. ``owner``: the module whose result it is (a key)."""

    def __init__(self, text: dict | None = None, cond: dict | None = None):
        self._text, self._cond = text, cond

    def text(self, owner: Any, make: Callable[[], Any]) -> Any:
        return _memo(self._text, owner, make)

    def cond(self, owner: Any, make: Callable[[], Any]) -> Any:
        return _memo(self._cond, owner, make)


NONE = Shared()  # compute everything (training, tracing, whole clips)


def _memo(store: dict | None, key: Any, make: Callable[[], Any]) -> Any:
    if store is None:
        return make()
    if key not in store:
        store[key] = make()
    return store[key]


class _Key:
    """A tensor input as a key: matched by identity while unmodified, else by its bits against a
    private copy (CPU only). Inference tensors keep no version: bits only."""

    def __init__(self, t: torch.Tensor):
        self.tensor, self.version = t, None if t.is_inference() else t._version
        self.copy = t.clone() if t.device.type == "cpu" else None

    def matches(self, t: torch.Tensor) -> bool:
        if t is self.tensor and self.version is not None and t._version == self.version:
            return True
        a = self.copy
        if a is None or t.shape != a.shape or t.dtype != a.dtype or t.device != a.device:
            return False
        if t.dtype.is_floating_point:  # bits: -0.0 is not 0.0
            kind = _INT[t.element_size()]
            return torch.equal(t.view(kind), a.view(kind))
        return torch.equal(t, a)


class StreamReuse:
    """Per-stream memo of text- and (sigma, d)-derived tensors of ``model`` (see the module
    docstring). Its weights written to in place or moved since (version, storage) start anew;
    another model gets no reuse."""

    def __init__(self, model: torch.nn.Module, max_texts: int = 4, max_conds: int = 16):
        self.model, self.params = model, list(model.parameters())  # listed once: 0.4 ms a time
        self.max_texts, self.max_conds = max_texts, max_conds
        self._texts: list[tuple[_Key, _Key, list, dict, list]] = []  # text, mask, weights, memo, conds

    def shared(self, model: torch.nn.Module, text: torch.Tensor, mask: torch.Tensor,
               sigma: torch.Tensor, step_size: torch.Tensor) -> Shared:
        if (model is not self.model or torch.is_grad_enabled() or torch.compiler.is_compiling()
                or torch.jit.is_tracing() or is_in_torch_dispatch_mode()):
            return NONE
        weights = [(p._version, p.data_ptr()) for p in self.params]
        entry = next((e for e in self._texts if e[2] == weights and e[0].matches(text)
                      and e[1].matches(mask)), None)
        if entry is None:
            entry = (_Key(text), _Key(mask), weights, {}, [])
            self._texts.append(entry)
            del self._texts[:-self.max_texts]
        conds = entry[4]
        found = next((c for c in conds if c[0].matches(sigma) and c[1].matches(step_size)), None)
        if found is None:
            found = (_Key(sigma), _Key(step_size), {})
            conds.append(found)
            del conds[:-self.max_conds]
        return Shared(entry[3], found[2])
