"""`s2dit report RUN --serve`: the report's folder over HTTP on loopback, read through fsspec, so
a report on S3 (or any fsspec URL) opens in a browser without copying it.

Read-only, GET and HEAD only, on 127.0.0.1; a path is resolved inside the folder (no ``..``,
no absolute paths), anything else is 404. Range requests are answered (206) so that browsers
can seek in the MP4s. The standard library's threading HTTP server does the rest.
"""

from __future__ import annotations

import mimetypes
import posixpath
import re
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import fsspec

HOST = "127.0.0.1"
RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


def _handler(fs, root: str, page: str) -> type[BaseHTTPRequestHandler]:
    """A request handler serving ``root`` of ``fs``; ``/`` redirects to ``page``."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "s2dit-report"

        def do_GET(self) -> None:  # (http.server names them so)
            self._send(body=True)

        def do_HEAD(self) -> None:
            self._send(body=False)

        def log_message(self, format: str, *args) -> None:  # quiet: no access log
            del format, args

        def _send(self, *, body: bool) -> None:
            relative = posixpath.normpath(unquote(urlsplit(self.path).path)).lstrip("/")
            if relative in ("", "."):
                self.send_response(HTTPStatus.FOUND)
                self.send_header("Location", f"/{page}")
                self.end_headers()
                return
            path = f"{root}/{relative}"
            if relative.startswith("..") or not fs.isfile(path):
                self.send_error(HTTPStatus.NOT_FOUND, f"{relative} is not in the report folder")
                return
            size = fs.size(path)
            start, end, status = _byte_range(self.headers.get("Range"), size)
            if status == HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE:
                self.send_response(status)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return
            self.send_response(status)
            self.send_header("Content-Type", mimetypes.guess_type(relative)[0] or "application/octet-stream")
            self.send_header("Content-Length", str(end - start))
            self.send_header("Accept-Ranges", "bytes")
            if status == HTTPStatus.PARTIAL_CONTENT:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            self.end_headers()
            if body and end > start:
                self.wfile.write(fs.cat_file(path, start=start, end=end))

    return Handler


def _byte_range(header: str | None, size: int) -> tuple[int, int, HTTPStatus]:
    """(start, end exclusive, status) for a ``Range: bytes=a-b`` header (one range; others,
    or none, answer the whole file)."""
    match = RANGE.match(header or "")
    if not match or match.groups() == ("", ""):
        return 0, size, HTTPStatus.OK
    first, last = match.groups()
    if first == "":  # the last N bytes
        start, end = max(0, size - int(last)), size
    else:
        start, end = int(first), min(size, int(last) + 1) if last else size
    if start >= size or start >= end:
        return 0, 0, HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE
    return start, end, HTTPStatus.PARTIAL_CONTENT


def report_server(page_url: str, port: int = 0) -> ThreadingHTTPServer:
    """A server (not yet serving) of the folder holding ``page_url`` on 127.0.0.1:``port``
    (0: a free port); its page is at ``page_address(server, page_url)``."""
    folder, page = page_url.rstrip("/").rsplit("/", 1) if "/" in page_url else (".", page_url)
    fs, root = fsspec.core.url_to_fs(folder)
    try:
        return ThreadingHTTPServer((HOST, port), _handler(fs, root.rstrip("/"), page))
    except OSError as exc:  # the port is taken (or not ours to bind)
        raise ValueError(f"cannot serve on {HOST}:{port}: {exc.strerror or exc}; pick another "
                         "--port, or 0 for a free one") from None


def page_address(server: ThreadingHTTPServer, page_url: str) -> str:
    return f"http://{HOST}:{server.server_address[1]}/{page_url.rstrip('/').rsplit('/', 1)[-1]}"


def serve(page_url: str, port: int = 0, *, ready: Callable[[str], None] = print,
          stop: threading.Event | None = None) -> None:
    """Serve the report folder until Ctrl-C (or ``stop`` is set); ``ready(address)`` is called
    once the socket listens."""
    with report_server(page_url, port) as server:
        ready(page_address(server, page_url))
        if stop is not None:  # a caller (a test) that stops it without a signal
            threading.Thread(target=lambda: (stop.wait(), server.shutdown()), daemon=True).start()
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
