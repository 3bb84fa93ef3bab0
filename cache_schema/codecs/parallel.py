"""Coding many independent chunks on a few threads (Blosc and the numpy residual kernels release
the GIL, so chunks code in parallel; the bytes do not depend on the thread count).

One small pool per process, made on first use (and again after a fork: a forked child has no
threads). Work below ``MIN_BYTES`` stays on the caller's thread (a pool hop costs more than it
saves on kB chunks).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

MIN_BYTES = 1 << 20
_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None  # (pid, pool)


def threads() -> int:
    """Coding threads: S2DIT_CODEC_THREADS, else the CPU count, at most 4."""
    env = os.environ.get("S2DIT_CODEC_THREADS", "")
    return max(1, int(env)) if env.isdigit() else min(4, os.cpu_count() or 1)


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(max_workers=threads(),
                                                     thread_name_prefix="cache-codec"))
        return _pool[1]


def coded_map(fn: Callable[[T], R], items: Iterable[T], nbytes: int) -> list[R]:
    """``[fn(x) for x in items]`` in order, on the pool when ``nbytes`` (the work's size) is
    large enough and there is more than one item and more than one thread."""
    items = items if isinstance(items, Sequence) else list(items)
    if len(items) < 2 or nbytes < MIN_BYTES or threads() < 2:
        return [fn(x) for x in items]
    return list(_executor().map(fn, items))
