"""Writing sample outputs to any fsspec URL atomically, and MP4 video frame by frame.

A reader never sees a half-written output: a local file is written under a hidden temporary
name in the same folder and renamed into place; a remote one is written to a local temporary
file and uploaded in one put (object stores show a whole object or none).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

CODEC = "libx264"  # H.264 in yuv420p: plays everywhere; needs even frame sizes
WEBM_CODEC = "libvpx-vp9"  # VP9 in WebM: for browsers built without H.264 (open codecs only)


@contextlib.contextmanager
def atomic_output(url: str) -> Iterator[str]:
    """Yields a local path to write; on success it becomes ``url``, on error nothing does."""
    fs, path = fsspec.core.url_to_fs(url)
    suffix = Path(path).suffix  # writers (imageio, np.save) choose the format by extension
    if isinstance(fs, LocalFileSystem):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
        try:
            yield str(tmp)
            os.replace(tmp, target)  # atomic within one filesystem
        finally:
            tmp.unlink(missing_ok=True)
        return
    with tempfile.TemporaryDirectory(prefix="s2dit-out-") as folder:
        tmp = os.path.join(folder, f"out{suffix}")
        yield tmp
        fs.put_file(tmp, path)


class Mp4Writer:
    """One H.264 MP4 (or, with ``codec=WEBM_CODEC`` and a .webm path, a VP9 WebM) at a local
    path, fed (F, H, W, 3) uint8 frames as they are decoded."""

    def __init__(self, path: str, fps: float, codec: str = CODEC, quality: float = 5):
        import imageio

        # macro_block_size=2: keep the exact size (the default would silently resize to x16);
        # quality (1-10) is imageio's: H.264 crf = 51 * (1 - quality / 10), 5 -> crf 25. Not 10:
        # crf 0 is lossless H.264, a profile browsers do not decode.
        self._writer = imageio.get_writer(path, format="FFMPEG", fps=fps, codec=codec,
                                          pixelformat="yuv420p", macro_block_size=2,
                                          quality=quality, ffmpeg_log_level="error")
        self.frames = 0
        self.size: tuple[int, int] | None = None  # (height, width)

    def append(self, frames: np.ndarray) -> None:
        for frame in frames:
            if self.size is None:
                self.size = frame.shape[:2]
            self._writer.append_data(frame)
            self.frames += 1

    def close(self) -> None:
        self._writer.close()


def write_video(url: str, frames: np.ndarray, fps: float, codec: str = CODEC,
                quality: float = 5) -> str:
    """(F, H, W, 3) uint8 frames -> one video at ``url``, atomically."""
    with atomic_output(url) as path:
        writer = Mp4Writer(path, fps, codec, quality)
        try:
            writer.append(frames)
        finally:
            writer.close()
    return url

