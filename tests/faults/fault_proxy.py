"""A fault-injecting HTTP proxy on 127.0.0.1 in front of an S3 endpoint (the moto server).

Each request draws from a seeded ``random.Random``: with probability ``rate`` (while the
schedule is on: at most ``max_faults`` faults within ``duration`` seconds of the start) it gets
one fault of ``kinds``; otherwise it is forwarded unchanged:

- ``503``: an S3 ``SlowDown`` error, ``500``: an S3 ``InternalError``;
- ``latency``: forwarded after a pause of up to ``max_latency`` seconds;
- ``drop``: the connection closes after the request, with no response at all;
- ``lost_reply``: the request reaches the server, then the connection closes before its
  response (a write that happened, which the client cannot know);
- ``truncate``: the response's headers promise the whole body, half of it is sent, then the
  connection closes.

``counts`` holds the faults injected by kind (and ``forwarded``), ``requests`` each request's
(method, path, fault or "forwarded"). Loopback only.
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

KINDS = ("503", "500", "latency", "drop", "lost_reply", "truncate")
_ERROR = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>"
          "<Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>")
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


@dataclass
class Schedule:
    seed: int = 0
    rate: float = 0.2
    kinds: tuple[str, ...] = KINDS
    max_faults: int = 50
    duration: float = 60.0
    max_latency: float = 0.3


@dataclass
class FaultProxy:
    upstream: str  # http://127.0.0.1:PORT of the real server
    schedule: Schedule = field(default_factory=Schedule)
    counts: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, fault)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.schedule.seed)
        self._lock = threading.Lock()
        self._started = time.monotonic()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                body = self._body()
                fault = proxy._draw()
                with proxy._lock:
                    proxy.requests.append((self.command, self.path, fault or "forwarded"))
                if fault in ("503", "500"):
                    code, message = ("SlowDown", "Please reduce your request rate.") \
                        if fault == "503" else ("InternalError", "We encountered an internal error.")
                    payload = _ERROR.format(code=code, message=message).encode()
                    self.send_response(int(fault))
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "latency":
                    time.sleep(proxy._pause())
                status, headers, data = proxy._forward(self.command, self.path, self.headers, body)
                if fault == "lost_reply":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(status)
                head = self.command == "HEAD"  # its Content-Length is the object's: keep it
                for key, value in headers:
                    if key.lower() not in _HOP and (head or key.lower() != "content-length"):
                        self.send_header(key, value)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if head:
                    return
                if fault == "truncate" and len(data) > 1:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def set_schedule(self, schedule: Schedule) -> None:
        """A new seeded schedule, starting now (counts start over)."""
        with self._lock:
            self.schedule, self.counts, self.requests = schedule, {}, []
            self._rng = random.Random(schedule.seed)
            self._started = time.monotonic()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def faults(self) -> int:
        return sum(v for k, v in self.counts.items() if k != "forwarded")

    def start(self) -> FaultProxy:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _draw(self) -> str | None:
        s = self.schedule
        with self._lock:
            on = self.faults < s.max_faults and time.monotonic() - self._started < s.duration
            roll, kind = self._rng.random(), self._rng.choice(s.kinds)
            fault = kind if on and roll < s.rate else None
            key = fault or "forwarded"
            self.counts[key] = self.counts.get(key, 0) + 1
            return fault

    def _pause(self) -> float:
        with self._lock:
            return self._rng.uniform(0, self.schedule.max_latency)

    def _forward(self, method: str, path: str, headers, body: bytes):
        target = urlsplit(self.upstream)
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in _HOP}
            sent["Content-Length"] = str(len(body))
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()
