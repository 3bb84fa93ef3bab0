"""Pictures and videos of a report: files in an assets folder beside the HTML (referenced by
relative path), or inlined as data URIs (one file to mail around: `s2dit cache report`)."""

from __future__ import annotations

import base64
import os
import tempfile

import numpy as np

from pipeline.video_io import CODEC, WEBM_CODEC, atomic_output, write_video

from .html import esc

# H.264 in MP4 plays in Chrome, Safari, Edge, Firefox and Debian's Chromium (the browser test
# checks it loads); VP9 in WebM is for browsers built with open codecs only (Assets(webm=True)).
MP4 = ("mp4", "video/mp4", CODEC)
QUALITY = 9  # crf 5: flat latent blocks stay flat (the default crf 25 smears them); still tiny
WEBM = ("webm", "video/webm", WEBM_CODEC)


def png_bytes(picture: np.ndarray) -> bytes:
    import imageio.v3 as iio

    return iio.imwrite("<bytes>", picture, extension=".png")


class Assets:
    """``folder_url`` + ``prefix`` (the folder relative to the HTML), or ``inline``."""

    def __init__(self, folder_url: str | None, prefix: str = "", *, inline: bool = False,
                 webm: bool = False):
        if not inline and folder_url is None:
            raise ValueError("assets need a folder unless inlined")
        self.formats = (MP4, WEBM) if webm else (MP4,)  # each format is one more ffmpeg run per clip
        self.folder, self.prefix, self.inline = (folder_url or "").rstrip("/"), prefix.rstrip("/"), inline
        self.written: list[str] = []

    def put(self, name: str, data: bytes) -> str:
        url = f"{self.folder}/{name}"
        with atomic_output(url) as path, open(path, "wb") as handle:
            handle.write(data)
        self.written.append(name)
        return f"{self.prefix}/{name}" if self.prefix else name

    def image(self, name: str, picture: np.ndarray, alt: str) -> str:
        """An <img> of an (H, W, 3) uint8 picture."""
        data = png_bytes(picture)
        src = ("data:image/png;base64," + base64.b64encode(data).decode()) if self.inline else self.put(f"{name}.png", data)
        h, w = picture.shape[:2]
        return f'<img class="frames" src="{esc(src)}" width="{w}" height="{h}" alt="{esc(alt)}">'

    def video(self, name: str, frames: np.ndarray, fps: float, title: str) -> str:
        """A looping <video> of (F, H, W, 3) uint8 frames: MP4 (H.264), and WebM (VP9) if asked."""
        sources = []
        with tempfile.TemporaryDirectory(prefix="s2dit-report-") as tmp:
            for ext, mime, codec in self.formats:
                local = os.path.join(tmp, f"clip.{ext}")
                write_video(local, frames, fps, codec, QUALITY)
                with open(local, "rb") as handle:
                    data = handle.read()
                src = (f"data:{mime};base64," + base64.b64encode(data).decode()) if self.inline \
                    else self.put(f"{name}.{ext}", data)
                sources.append(f'<source src="{esc(src)}" type="{mime}">')
        h, w = frames.shape[1:3]
        # no controls: their overlay would darken the bottom of a 128-pixel clip; it loops
        return (f'<video width="{w}" height="{h}" autoplay loop muted playsinline '
                f'preload="auto" title="{esc(title)}">{"".join(sources)}</video>')
