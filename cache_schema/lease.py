"""Writer leases: how a writer tells ``gc`` that what it writes now is not an orphan yet.

Shards are written before a manifest names them (DESIGN 3.3), so between the two they look
exactly like a killed writer's leftovers. A writer that does this holds a lease for the whole
time: ``leases/<writer-id>.json`` in the cache, with when it started and its time to live,
rewritten (a heartbeat) by a background thread every ``ttl / 4`` and deleted at its end.

``gc`` reads the leases (``live_leases``): a live one (rewritten within its ttl, judged by the
store's own timestamp, so the writer's clock does not matter) protects every orphan not older
than its start (minus ``CLOCK_SKEW``, the writer's clock against the store's); an expired one
(a killed or frozen writer) protects nothing and gc removes it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Self

from .store import Store, open_store, split_ref

LEASE_DIR = "leases"
DEFAULT_TTL = 300.0  # seconds without a heartbeat before a writer counts as dead
MAX_TTL = 3600.0  # a lease cannot claim more, whatever its file says
CLOCK_SKEW = 120.0  # the start a writer records is its own clock; store timestamps are the store's
MAX_LEASE_BYTES = 1 << 16


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseInfo:
    writer: str
    what: str  # the operation, for people reading the folder ("cache generate", "CacheWriter")
    host: str
    pid: int
    started_at: float  # the writer's clock
    heartbeat_at: float  # the writer's clock, last renewal
    ttl_seconds: float

    @classmethod
    def from_json(cls, data: object) -> LeaseInfo:
        if not isinstance(data, dict):
            raise TypeError("a lease is a JSON object")
        info = cls(writer=str(data["writer"]), what=str(data.get("what", "")),
                   host=str(data.get("host", "")), pid=int(data.get("pid", 0)),
                   started_at=float(data["started_at"]), heartbeat_at=float(data["heartbeat_at"]),
                   ttl_seconds=float(data["ttl_seconds"]))
        if not all(map(math.isfinite, (info.started_at, info.heartbeat_at, info.ttl_seconds))):
            raise ValueError("lease times must be finite")
        return info


class WriterLease:
    """A lease on ``store`` held from ``start()`` to ``end()`` (or the ``with`` block)."""

    def __init__(self, store: Store, *, what: str, ttl: float = DEFAULT_TTL):
        if not 0 < ttl <= MAX_TTL:
            raise ValueError(f"lease ttl must be in (0, {MAX_TTL:g}] seconds, got {ttl}")
        self.store, self.what, self.ttl = store, what, ttl
        self.writer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.rel = f"{LEASE_DIR}/{self.writer}.json"
        self.started_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        if self.started_at is not None:
            return self
        self.started_at = time.time()
        self.renew()  # in the caller's thread: a store that refuses the lease fails here
        self._thread = threading.Thread(target=self._beat, name="cache-lease", daemon=True)
        self._thread.start()
        return self

    def renew(self) -> None:
        info = LeaseInfo(writer=self.writer, what=self.what, host=socket.gethostname(),
                         pid=os.getpid(), started_at=self.started_at or time.time(),
                         heartbeat_at=time.time(), ttl_seconds=self.ttl)
        self.store.put_bytes(self.rel, json.dumps(asdict(info)).encode())

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            # A failed renewal is retried at the next beat; if the store stays unreachable the
            # lease expires, gc may take this writer's shards and its commit then refuses them.
            with contextlib.suppress(Exception):
                self.renew()

    def end(self) -> None:
        if self.started_at is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(Exception):  # best effort: an unremoved lease just expires
            self.store.delete(self.rel)
        self.started_at = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.end()


def writer_lease(url: str, *, what: str, ttl: float = DEFAULT_TTL) -> WriterLease:
    """A (not yet started) lease on the cache at ``url``: ``with writer_lease(url, what=...):``
    around ``write_shard`` calls and the ``commit_generation`` that names them."""
    return WriterLease(open_store(split_ref(url)[0]), what=what, ttl=ttl)


@dataclass(frozen=True, slots=True)
class Leases:
    """What gc needs: ``protect_from`` (orphans modified at or after it are kept; None: no live
    lease) and the live and expired leases' paths."""

    protect_from: float | None
    live: list[str]
    expired: list[str]


def live_leases(store: Store, now: float | None = None) -> Leases:
    """Read every lease of ``store``. A lease file that does not parse (a writer killed while
    writing it) counts as live and protecting everything while its object is younger than
    ``MAX_TTL``: never guess in the direction of deleting."""
    now = time.time() if now is None else now
    starts, live, expired = [], [], []
    for rel in store.list(LEASE_DIR):
        if not rel.endswith(".json"):
            continue
        stamp = store.modified(rel)
        try:
            if store.size(rel) > MAX_LEASE_BYTES:
                raise ValueError("too large")
            info = LeaseInfo.from_json(json.loads(store.read_bytes(rel)))
        except FileNotFoundError:
            continue  # ended between the listing and the read
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            if stamp is None or now - stamp < MAX_TTL:
                live.append(rel)
                starts.append(float("-inf"))
            else:
                expired.append(rel)
            continue
        beat = stamp if stamp is not None else info.heartbeat_at
        if now - beat < min(info.ttl_seconds, MAX_TTL):
            live.append(rel)
            starts.append(info.started_at - CLOCK_SKEW)
        else:
            expired.append(rel)
    return Leases(protect_from=min(starts) if starts else None, live=live, expired=expired)


__all__ = ["CLOCK_SKEW", "DEFAULT_TTL", "LEASE_DIR", "LeaseInfo", "Leases", "WriterLease",
           "live_leases", "writer_lease"]
