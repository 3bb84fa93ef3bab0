"""Counting the bytes a read moves from the store (the loader's bytes-per-sample metric)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class ReadMeter:
    """Bytes and requests of the reads it is passed to; safe to share between reader threads."""

    bytes: int = 0
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, nbytes: int, requests: int = 1) -> None:
        with self._lock:
            self.bytes += int(nbytes)
            self.requests += requests
