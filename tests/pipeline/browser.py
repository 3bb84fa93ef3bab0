"""Open an HTML file in real headless Chromium and ask it what loaded (the report tests).

Chromium is driven over the DevTools protocol on a loopback websocket (aiohttp, which s3fs
already brings): navigate to the file, wait until every <img> has decoded or failed and every
<video> has its metadata or failed (bounded), read the answers out of the page, save a
full-page screenshot. No browser is downloaded: the system's ``chromium`` (Debian's package,
``make setup`` installs it where it can) or ``$CHROMIUM``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Runs in the page: waits (bounded) for every image and video, then describes them.
PROBE = """
(async () => {
  const deadline = Date.now() + %(wait_ms)d;
  const settled = () => [...document.images].every(i => i.complete) &&
      [...document.querySelectorAll('video')].every(v => v.readyState >= 1 || v.error);
  while (!settled() && Date.now() < deadline) await new Promise(r => setTimeout(r, 50));
  return JSON.stringify({
    title: document.title,
    images: [...document.images].map(i => ({src: i.getAttribute('src').slice(0, 120),
        width: i.naturalWidth, height: i.naturalHeight})),
    videos: [...document.querySelectorAll('video')].map(v => ({
        src: (v.currentSrc || '').slice(-120), readyState: v.readyState,
        error: v.error ? v.error.code : null, width: v.videoWidth, height: v.videoHeight,
        duration: v.duration})),
    tables: [...document.querySelectorAll('table')].map(t => t.id).filter(Boolean),
    svgs: [...document.querySelectorAll('svg')].map(s => ({id: s.id, label: s.getAttribute('aria-label'),
        width: s.getBoundingClientRect().width, height: s.getBoundingClientRect().height,
        points: [...s.querySelectorAll('[data-point]')].map(p => ({label: p.dataset.point,
            marked: p.classList.contains('marked'), width: p.getBoundingClientRect().width}))})),
    height: document.documentElement.scrollHeight,
    width: document.documentElement.scrollWidth,
  });
})()
"""


def find_chromium() -> str | None:
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit if shutil.which(explicit) else None
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


@dataclass
class PageReport:
    title: str
    images: list[dict[str, Any]] = field(default_factory=list)
    videos: list[dict[str, Any]] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # ids of the page's tables
    # each <svg>: id, aria-label, rendered size, and its [data-point] marks (label, marked, width)
    svgs: list[dict[str, Any]] = field(default_factory=list)
    height: int = 0
    width: int = 0  # the page's scroll width: wider than the viewport when it overflows sideways
    screenshot: str | None = None

    def broken(self) -> list[str]:
        """What did not load: images without a natural size, videos without metadata."""
        bad = [f"image {i['src']}" for i in self.images if not i["width"]]
        bad += [f"video {v['src'] or '(no playable source)'} (readyState {v['readyState']}, "
                f"error {v['error']})" for v in self.videos if v["readyState"] < 1 or v["error"]]
        return bad


def _wait_for_port(profile: Path, proc: subprocess.Popen, timeout: float) -> int:
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker.exists() and marker.read_text().strip():
            return int(marker.read_text().split()[0])
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with code {proc.returncode} before listening")
        time.sleep(0.05)
    raise TimeoutError(f"chromium did not open its DevTools port within {timeout:.0f} s")


async def _drive(port: int, url: str, screenshot: str | None, width: int, wait_s: float,
                 timeout: float) -> PageReport:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
            pages = [t for t in await resp.json() if t["type"] == "page"]
        async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            counter = 0
            events: list[dict] = []

            async def call(method: str, **params) -> dict:
                nonlocal counter
                counter += 1
                await ws.send_json({"id": counter, "method": method, "params": params})
                while True:
                    msg = json.loads((await ws.receive()).data)
                    if msg.get("id") == counter:
                        if "error" in msg:
                            raise RuntimeError(f"{method}: {msg['error']}")
                        return msg["result"]
                    events.append(msg)

            async def load_event() -> None:
                while not any(e.get("method") == "Page.loadEventFired" for e in events):
                    events.append(json.loads((await ws.receive()).data))

            await call("Page.enable")
            await call("Emulation.setDeviceMetricsOverride", width=width, height=800,
                       deviceScaleFactor=1, mobile=False)
            await call("Page.navigate", url=url)
            await load_event()
            result = await call("Runtime.evaluate", expression=PROBE % {"wait_ms": int(wait_s * 1000)},
                                awaitPromise=True, returnByValue=True)
            report = PageReport(**json.loads(result["result"]["value"]))
            if screenshot:
                await call("Emulation.setDeviceMetricsOverride", width=width,
                           height=min(max(report.height, 200), 16000), deviceScaleFactor=1, mobile=False)
                shot = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
                Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
                report.screenshot = screenshot
            return report


def check_page(html_path: str, *, screenshot: str | None = None, width: int = 1280,
               wait_s: float = 15.0, timeout: float = 60.0, chromium: str | None = None) -> PageReport:
    """Load ``html_path`` in headless Chromium; what its images, videos and tables did.

    Bounded: ``wait_s`` for media to settle, ``timeout`` for the whole visit."""
    binary = chromium or find_chromium()
    if binary is None:
        raise FileNotFoundError("no chromium found: install Debian's chromium package "
                                "(`make setup` does as root) or set $CHROMIUM")
    url = Path(html_path).resolve().as_uri()
    # the profile is removed only after every chromium process of this visit has exited (its
    # helpers keep writing there); a leftover file of theirs must not fail the check
    with tempfile.TemporaryDirectory(prefix="s2dit-chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--mute-audio", "--autoplay-policy=no-user-gesture-required",
             "--allow-file-access-from-files", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port = _wait_for_port(Path(profile), proc, timeout)
            return asyncio.run(asyncio.wait_for(
                _drive(port, url, screenshot, width, wait_s, timeout), timeout))
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """End the chromium started here and its helper processes (its own process group)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        # the main process is gone; give its helpers the same bounded moment
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
