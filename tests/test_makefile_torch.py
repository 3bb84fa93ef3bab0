"""The Makefile's torch step (issue 29): PyTorch's CPU index explicitly where it answers, else the
pinned wheel through pip's own configuration with a note, decided by a bounded check. Run as
``make torch`` with a stand-in ``python`` whose ``-m pip`` only records its arguments (nothing is
installed) and local indexes: one that answers, a closed port, one that accepts and never replies."""

from __future__ import annotations

import functools
import http.server
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIN = "torch==2.13.0"
pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("timeout") is None,
                                reason="make and coreutils' timeout are needed")


def make_torch(tmp_path: Path, index: str, wait: int = 5) -> tuple[str, list[str], float]:
    """(what make printed, the recorded pip command lines, seconds taken)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "pip.log"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "python"
    fake.write_text(f'#!/bin/sh\nif [ "$1" = -m ]; then echo "$*" >> {log}; exit 0; fi\n'
                    f'exec {sys.executable} "$@"\n')
    fake.chmod(0o755)
    start = time.monotonic()
    done = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(ROOT), "torch",
                           f"BIN={bin_dir}", f"TORCH_INDEX={index}", f"TORCH_INDEX_WAIT={wait}"],
                          check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout, log.read_text().splitlines(), time.monotonic() - start


def test_a_reachable_cpu_index_is_used_explicitly(tmp_path):
    (tmp_path / "site/whl/cpu/torch").mkdir(parents=True)
    (tmp_path / "site/whl/cpu/torch/index.html").write_text("<html></html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "site"))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    index = f"http://127.0.0.1:{server.server_address[1]}/whl/cpu"
    try:
        out, pip, _ = make_torch(tmp_path, index)
    finally:
        server.shutdown()
        server.server_close()
    assert out.strip() == f"{PIN} from {index}"
    explicit = f"-m pip install --quiet {PIN} --index-url {index} --extra-index-url https://pypi.org/simple"
    assert pip == [explicit]


def test_an_unreachable_index_falls_back_to_the_pinned_wheel_at_once(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        index = f"http://127.0.0.1:{probe.getsockname()[1]}/whl/cpu"
    out, pip, seconds = make_torch(tmp_path, index)
    assert out.startswith(f"note: {index} could not be reached within 5 s: {PIN} from pip's")
    assert pip == [f"-m pip install --quiet {PIN}"]
    assert seconds < 5


def test_an_index_that_never_answers_is_given_up_after_the_bound(tmp_path):
    with socket.socket() as silent:  # accepts connections (the backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        index = f"http://127.0.0.1:{silent.getsockname()[1]}/whl/cpu"
        out, pip, seconds = make_torch(tmp_path, index, wait=1)
    assert out.startswith(f"note: {index} could not be reached within 1 s")
    assert pip == [f"-m pip install --quiet {PIN}"]
    assert 1 <= seconds < 4
