"""One ``s2dit run`` per run folder: an exclusive lock object, ``RUN_DIR/run_state.lock``.

Two runs in one folder would interleave their writes to ``run_state.json`` and the stages'
folders (both training into ``student/``, both committing to ``cache/``). A run therefore
creates the lock object create-only (an atomic hard link locally, a conditional put on object
storage, as cache commits do: ``cache_schema.store.Store.put_create_only``) before it writes
anything, rewrites it (a heartbeat) every ``ttl / 4`` from a background thread, and deletes it
at its end. A second run finds the object and stops with one ``RunLocked`` line naming the
holder (host, pid, start, last heartbeat).

A lock is stale, and the next run takes it over with a message, when its holder is gone:

- it ran on this host and its process no longer exists (checked at once: no wait after a
  killed run; a pid reused by another process is told apart by its start time), or
- its heartbeat is older than its ttl, judged by the store's own timestamp of the object (so
  the holder's clock does not matter): a holder on another machine that died.

A lock object that does not parse (not written by this code) counts as held until it is older
than ``DEFAULT_TTL``; it is never deleted sooner.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Self

from cache_schema.store import AlreadyExists, Store, open_store

LOCK_FILE = "run_state.lock"
DEFAULT_TTL = 300.0  # seconds without a heartbeat before a holder on another host counts as dead
MAX_TTL = 3600.0  # a lock cannot claim more, whatever its file says
MAX_LOCK_BYTES = 1 << 16


class RunLocked(ValueError):
    """Another ``s2dit run`` holds the run folder (a ValueError: one ``error:`` line, exit 2)."""


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux /proc; None elsewhere or when it is gone):
    with the pid it names one process, not whichever reuses the number later."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]  # a zombie has exited already


def _alive(pid: int, start: str | None) -> bool:
    """Whether process ``pid`` (started at ``start``, if known) still runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    if os.path.exists("/proc/self/stat"):
        now = _process_start(pid)
        return now is not None and (start is None or now == start)
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class LockInfo:
    token: str  # this run's, so that it deletes only its own lock
    host: str
    pid: int
    pid_start: str | None
    started_at: float  # the holder's clock
    heartbeat_at: float  # the holder's clock, last renewal
    ttl_seconds: float

    @classmethod
    def from_json(cls, data: object) -> LockInfo:
        if not isinstance(data, dict):
            raise TypeError("a lock is a JSON object")
        start = data.get("pid_start")
        info = cls(token=str(data["token"]), host=str(data["host"]), pid=int(data["pid"]),
                   pid_start=None if start is None else str(start),
                   started_at=float(data["started_at"]), heartbeat_at=float(data["heartbeat_at"]),
                   ttl_seconds=float(data["ttl_seconds"]))
        if not all(map(math.isfinite, (info.started_at, info.heartbeat_at, info.ttl_seconds))):
            raise ValueError("lock times must be finite")
        return info

    def holder(self) -> str:
        started = datetime.datetime.fromtimestamp(self.started_at, datetime.UTC)
        return f"host {self.host}, pid {self.pid}, started {started:%Y-%m-%d %H:%M:%S} UTC"


@dataclass(frozen=True, slots=True)
class _Found:
    """The lock object as found: its info (None: unreadable), age of its last write."""

    info: LockInfo | None
    age: float | None  # seconds since the store last wrote it (None: unknown)

    def stale_because(self) -> str | None:
        info = self.info
        if info is None:
            return None if self.age is None or self.age < DEFAULT_TTL else \
                f"it is unreadable and {self.age:.0f} s old"
        if info.host == socket.gethostname() and not _alive(info.pid, info.pid_start):
            return f"its process ({info.holder()}) no longer runs"
        ttl = min(info.ttl_seconds, MAX_TTL)
        age = self.age if self.age is not None else time.time() - info.heartbeat_at
        if age > ttl:
            return f"its holder ({info.holder()}) has not renewed it for {age:.0f} s (ttl {ttl:.0f} s)"
        return None


class RunLock:
    """The lock of one run folder, held from ``acquire()`` to ``release()`` (or ``with``)."""

    def __init__(self, run_dir: str, *, ttl: float = DEFAULT_TTL,
                 log: Callable[[str], None] = print):
        if not 0 < ttl <= MAX_TTL:
            raise ValueError(f"run lock ttl must be in (0, {MAX_TTL:g}] seconds, got {ttl}")
        self.run_dir, self.ttl, self.log = run_dir.rstrip("/"), ttl, log
        self.store: Store = open_store(self.run_dir)
        self.token = uuid.uuid4().hex
        self.started_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.store.url_of(LOCK_FILE)

    def _body(self) -> bytes:
        pid = os.getpid()
        info = LockInfo(token=self.token, host=socket.gethostname(), pid=pid,
                        pid_start=_process_start(pid), started_at=self.started_at or time.time(),
                        heartbeat_at=time.time(), ttl_seconds=self.ttl)
        return json.dumps(asdict(info)).encode()

    def _find(self) -> _Found | None:
        try:
            if self.store.size(LOCK_FILE) > MAX_LOCK_BYTES:
                raise ValueError("too large")
            data = self.store.read_bytes(LOCK_FILE)
        except FileNotFoundError:
            return None
        except ValueError:
            data = b""
        stamp = self.store.modified(LOCK_FILE)
        age = None if stamp is None else max(0.0, time.time() - stamp)
        try:
            return _Found(LockInfo.from_json(json.loads(data)), age)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return _Found(None, age)

    def acquire(self) -> Self:
        """Take the lock, or raise RunLocked naming the holder. A stale lock (module
        docstring) is taken over once, with a message."""
        if self.started_at is not None:
            return self
        self.started_at = time.time()
        for attempt in range(2):
            try:
                self.store.put_create_only(LOCK_FILE, self._body())
                break
            except AlreadyExists:
                found = self._find()
                if found is None:  # released between the put and the read
                    continue
                why = found.stale_because()
                if why is None or attempt:
                    self.started_at = None
                    raise RunLocked(self._refusal(found)) from None
                self.log(f"taking over the lock of run folder {self.run_dir}: {why}")
                with contextlib.suppress(FileNotFoundError):
                    self.store.delete(LOCK_FILE)
        else:
            self.started_at = None
            raise RunLocked(f"run folder {self.run_dir}: could not take its lock {self.url}; "
                            "another s2dit run is starting there: try again")
        self._thread = threading.Thread(target=self._beat, name="run-lock", daemon=True)
        self._thread.start()
        return self

    def _refusal(self, found: _Found) -> str:
        info = found.info
        if info is None:
            return (f"run folder {self.run_dir} is locked by {self.url}, which s2dit did not "
                    f"write (unreadable); if no s2dit run uses this folder, delete that file")
        beat = f"{found.age:.0f} s ago" if found.age is not None else "at an unknown time"
        return (f"run folder {self.run_dir} is in use by another s2dit run ({info.holder()}, "
                f"last heartbeat {beat}); wait for it to finish, or stop it (a lock whose holder "
                f"died is taken over: at once on {info.host}, elsewhere after "
                f"{min(info.ttl_seconds, MAX_TTL):.0f} s without a heartbeat)")

    def _ours(self) -> bool:
        found = self._find()
        return found is not None and found.info is not None and found.info.token == self.token

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            # A renewal that fails is retried at the next beat. A lock taken over meanwhile (this
            # process frozen beyond its ttl) is not written back: the other run holds it now.
            with contextlib.suppress(Exception):
                if not self._ours():
                    self.log(f"warning: the lock of {self.run_dir} was taken over by another run")
                    return
                self.store.put_bytes(LOCK_FILE, self._body())

    def release(self) -> None:
        if self.started_at is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(Exception):  # best effort: a lock left behind is stale at once
            if self._ours():
                self.store.delete(LOCK_FILE)
        self.started_at = None

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
