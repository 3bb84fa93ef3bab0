"""Pictures of latents a person can read.

The analytic teacher (DESIGN 4.3) builds every mean as ``pattern[colour] x canvas``: one fixed
channel vector per colour word, painted where the object is. ``ColourDecoder`` inverts that:
each latent pixel is projected on those colour patterns and painted in the colour whose word
explains it best, as bright as the projection, on black, upscaled to visible blocks. A right sample of "a red ring
moving left" is a red ring moving left. ``latent_to_rgb`` (a fixed channel projection) stays
for latents no colour pattern describes.
"""

from __future__ import annotations

import colorsys
import hashlib
from dataclasses import dataclass

import numpy as np

from .teachers.analytic import AnalyticTeacher

# Colour words -> display RGB in [0, 1]; other words get a hue of their own (by hash).
NAMED_COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.16, 0.14), "green": (0.16, 0.80, 0.24), "blue": (0.20, 0.38, 0.96),
    "yellow": (0.95, 0.85, 0.15), "orange": (0.98, 0.55, 0.10), "purple": (0.60, 0.25, 0.85),
    "violet": (0.56, 0.30, 0.90), "pink": (0.98, 0.45, 0.70), "cyan": (0.10, 0.85, 0.90),
    "magenta": (0.90, 0.15, 0.80), "white": (0.95, 0.95, 0.95), "grey": (0.55, 0.55, 0.55),
    "gray": (0.55, 0.55, 0.55), "brown": (0.55, 0.33, 0.15), "black": (0.25, 0.25, 0.25),
}
SCALE = 16  # latent pixel -> SCALE x SCALE block: an 8x8 latent frame is 128x128 (even: H.264)


def colour_of_word(word: str) -> tuple[float, float, float]:
    if word in NAMED_COLOURS:
        return NAMED_COLOURS[word]
    hue = int.from_bytes(hashlib.sha256(word.encode("utf-8")).digest()[:4], "little") / 2**32
    return colorsys.hsv_to_rgb(hue, 0.8, 0.95)


def upscale_nearest(frames: np.ndarray, scale: int) -> np.ndarray:
    """(..., H, W, 3) -> (..., H*scale, W*scale, 3): latent pixels as visible blocks."""
    return frames.repeat(scale, axis=-3).repeat(scale, axis=-2)


@dataclass(frozen=True)
class ColourDecoder:
    """Latents -> frames in the colours of the teacher's colour words."""

    words: tuple[str, ...]
    patterns: np.ndarray  # (K, C): the latent vector of a fully painted pixel of each colour
    rgb: np.ndarray  # (K, 3) in [0, 1]: the display colour of each word
    scale: int = SCALE

    @classmethod
    def of_teacher(cls, teacher: AnalyticTeacher, scale: int = SCALE) -> ColourDecoder:
        """The patterns read back from the teacher's own means (not re-derived), so the decoder
        follows whatever the teacher built its data from."""
        c = teacher.latent_shape[0]
        means = teacher.means.reshape(len(teacher.classes), -1, c, int(np.prod(teacher.latent_shape[1:])))
        words, patterns = [], []
        for colour in teacher.config.colours:
            ci = next(i for i, (_, col, _) in enumerate(teacher.classes) if col == colour)
            mode = means[ci, 0]  # (C, F*H*W): pattern x canvas, canvas 0 or 1
            patterns.append(mode[:, np.argmax(np.linalg.norm(mode, axis=0))])
            words.append(colour)
        return cls(words=tuple(words), patterns=np.stack(patterns),
                   rgb=np.array([colour_of_word(w) for w in words]), scale=scale)

    def weights(self, latents: np.ndarray) -> np.ndarray:
        """(N, C, F, H, W) -> (N, F, H, W, K): how much of each colour each pixel holds (1 = a
        teacher mean's painted pixel): the projection on each pattern alone. (Joint least
        squares would amplify noise: a few random patterns in C dims are nearly dependent.)"""
        dots = np.einsum("ncfhw,kc->nfhwk", np.asarray(latents, dtype=np.float64), self.patterns)
        return dots / (self.patterns ** 2).sum(1)

    def decode(self, latents: np.ndarray, *, upscale: bool = True) -> np.ndarray:
        """(N, C, F, H, W) latents -> (N, F, H', W', 3) uint8 frames (H' = H*scale): each pixel
        in the colour whose pattern explains most of it, as bright as its projection, on black."""
        amount = np.clip(self.weights(latents), 0.0, 1.0)  # (N, F, H, W, K)
        explained = amount ** 2 * (self.patterns ** 2).sum(1)
        best = explained.argmax(-1)[..., None]  # (N, F, H, W, 1)
        frames = np.take_along_axis(amount, best, -1) * self.rgb[best[..., 0]]
        frames = (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)
        return upscale_nearest(frames, self.scale) if upscale else frames


def latent_to_rgb(latents: np.ndarray) -> np.ndarray:
    """(N, C, F, H, W) latents -> (N, F, H, W, 3) uint8 by a fixed channel projection (for
    latents without colour patterns; the range is the whole batch's)."""
    c = latents.shape[1]
    proj = np.random.default_rng(0).standard_normal((c, 3))
    rgb = np.einsum("ncfhw,ck->nfhwk", latents.astype(np.float64), proj)
    rgb = (rgb - rgb.min()) / (rgb.max() - rgb.min() + 1e-9)
    return (rgb * 255).astype(np.uint8)


def frame_strip(frames: np.ndarray, gap: int = 2) -> np.ndarray:
    """(N, F, H, W, 3) frames -> one (N*(H+gap)-gap, F*(W+gap)-gap, 3) picture: a row per
    sample, frames left to right, separated by grey lines."""
    n, f, h, w, _ = frames.shape
    grid = np.full((n * (h + gap) - gap, f * (w + gap) - gap, 3), 96, dtype=np.uint8)
    for i in range(n):
        for t in range(f):
            grid[i * (h + gap): i * (h + gap) + h, t * (w + gap): t * (w + gap) + w] = frames[i, t]
    return grid


def save_latent_preview(latents: np.ndarray, path: str, decoder: ColourDecoder | None = None,
                        scale: int = SCALE) -> str:
    """A PNG frame strip of (N, C, F, H, W) latents: in the teacher's colours with a decoder,
    else by the fixed projection."""
    import imageio.v3 as iio

    frames = decoder.decode(latents) if decoder is not None else upscale_nearest(latent_to_rgb(latents), scale)
    iio.imwrite(path, frame_strip(frames))
    return path
