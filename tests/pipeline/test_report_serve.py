"""`s2dit report RUN --serve` (issue 29): the report's folder on 127.0.0.1, read through fsspec
(a local folder and a bucket on the loopback S3 server), Ctrl-C stopping it. Every wait is a
bounded loop or has a timeout."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import fsspec

from pipeline.report import write_report
from pipeline.report.serve import serve

ROOT = Path(__file__).resolve().parents[2]
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
CLIP = bytes(range(256)) * 4  # stands in for an asset (1 KiB)


def _get(url: str, **headers: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with OPENER.open(urllib.request.Request(url, headers=headers), timeout=30) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, b"", dict(exc.headers)


def _report(folder: Path) -> str:
    folder.mkdir()
    page = write_report(str(folder))  # a run that has not started: every stage pending
    (folder / "report_assets").mkdir()
    (folder / "report_assets" / "clip.mp4").write_bytes(CLIP)
    return page


def _serving(page_url: str):
    """(address, stop) of serve() in a thread, once it listens."""
    ready, stop = queue.Queue(), threading.Event()
    thread = threading.Thread(target=serve, args=(page_url,), daemon=True,
                              kwargs={"ready": ready.put, "stop": stop})
    thread.start()
    return ready.get(timeout=30), stop, thread


def _check_served(address: str) -> None:
    base = address.rsplit("/", 1)[0]
    status, body, headers = _get(f"{base}/")  # redirected to the page
    assert status == 200 and b"s2dit run report" in body and headers["Content-Type"] == "text/html"
    status, body, headers = _get(f"{base}/report_assets/clip.mp4")
    assert status == 200 and body == CLIP and headers["Content-Type"] == "video/mp4"
    status, body, headers = _get(f"{base}/report_assets/clip.mp4", Range="bytes=10-19")
    assert status == 206 and body == CLIP[10:20] and headers["Content-Range"] == "bytes 10-19/1024"
    assert _get(f"{base}/report_assets/clip.mp4", Range="bytes=-4")[1] == CLIP[-4:]
    assert _get(f"{base}/report_assets/clip.mp4", Range="bytes=2000-")[0] == 416
    assert _get(f"{base}/nothing.html")[0] == 404
    assert _get(f"{base}/../../etc/passwd")[0] == 404
    assert _get(f"{base}/%2e%2e/%2e%2e/etc/passwd")[0] == 404


def test_serves_a_local_report_folder_on_loopback(tmp_path):
    address, stop, thread = _serving(_report(tmp_path / "run"))
    try:
        assert address.startswith("http://127.0.0.1:") and address.endswith("/report.html")
        _check_served(address)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_serves_a_report_on_object_storage_through_fsspec(tmp_path, s3_bucket):
    _report(tmp_path / "run")
    fs, _ = fsspec.core.url_to_fs(s3_bucket)
    fs.put(str(tmp_path / "run"), f"{s3_bucket.removeprefix('s3://')}/run", recursive=True)
    address, stop, thread = _serving(f"{s3_bucket}/run/report.html")
    try:
        _check_served(address)
    finally:
        stop.set()
        thread.join(timeout=10)


def test_the_command_prints_the_address_and_ctrl_c_stops_it(tmp_path):
    (tmp_path / "run").mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # a shell's background job inherits SIGINT ignored (POSIX, no job control) and Python then
    # never raises KeyboardInterrupt: the child restores what a user's terminal gives it
    child = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "runpy.run_module('pipeline.cli', run_name='__main__')")
    proc = subprocess.Popen([sys.executable, "-c", child, "report", str(tmp_path / "run"),
                             "--serve", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        lines, deadline = [], time.monotonic() + 120
        while time.monotonic() < deadline and not any(" at http://" in line for line in lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        served = [line for line in lines if " at http://" in line]
        assert served, f"no address printed: {lines} {proc.stderr.read() if proc.poll() is not None else ''}"
        address = served[0].split(" at ", 1)[1].split()[0]
        assert _get(address)[0] == 200
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    assert out.strip().endswith("stopped") and "Traceback" not in err


def test_a_taken_port_is_one_error_line(tmp_path, capsys):
    import socket

    from pipeline.cli import main

    (tmp_path / "run").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["report", str(tmp_path / "run"), "--serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot serve on 127.0.0.1:{port}") and err.count("\n") == 1


