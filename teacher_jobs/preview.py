"""Previews a person can look at: latent-to-RGB frame strips (analytic) as PNG."""

from __future__ import annotations

import numpy as np


def latent_to_rgb(latents: np.ndarray) -> np.ndarray:
    """(N, C, F, H, W) latents -> (N, F, H, W, 3) uint8 by a fixed channel projection."""
    n, c, f, h, w = latents.shape
    proj = np.random.default_rng(0).standard_normal((c, 3))
    rgb = np.einsum("ncfhw,ck->nfhwk", latents.astype(np.float64), proj)
    rgb = (rgb - rgb.min()) / (rgb.max() - rgb.min() + 1e-9)
    return (rgb * 255).astype(np.uint8)


def upscale_nearest(frames: np.ndarray, scale: int) -> np.ndarray:
    """(..., H, W, 3) -> (..., H*scale, W*scale, 3): latent pixels as visible blocks."""
    return frames.repeat(scale, axis=-3).repeat(scale, axis=-2)


def save_latent_preview(latents: np.ndarray, path: str, scale: int = 8) -> str:
    """One row per sample, frames left to right, each latent pixel scale x scale."""
    import imageio.v3 as iio

    rgb = latent_to_rgb(latents)  # (N, F, H, W, 3)
    n, f, h, w, _ = rgb.shape
    grid = rgb.transpose(0, 2, 1, 3, 4).reshape(n * h, f * w, 3)
    grid = upscale_nearest(grid, scale)
    iio.imwrite(path, grid)
    return path
