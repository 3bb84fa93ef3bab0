"""The video sizes a Wan checkpoint can produce, from its configs alone (no weights).

One declaration for the driver (``WanSettings.video_limits`` and ``check_checkpoint``) and the
actor (``WanTeacher`` on the loaded pipeline): height and width are multiples of the VAE's
spatial factor x the transformer's patch; frames are ``temporal factor x k + 1`` with whole
temporal patches; the rotary embedding covers at most ``rope_max_seq_len`` patches per axis
(diffusers' ``WanRotaryPosEmbed`` slices its table, so more fails with a shape error).
"""

from __future__ import annotations

from typing import Any

from .video_limits import MAX_FRAMES, MAX_SIDE, SizeGrid, VideoLimits

# diffusers' defaults (WanTransformer3DModel, AutoencoderKLWan): what a config without the key means
DEFAULT_PATCH = (1, 2, 2)
DEFAULT_ROPE = 1024
DEFAULT_VAE_SPATIAL, DEFAULT_VAE_TEMPORAL = 8, 4


def wan_geometry(configs: dict[str, Any]) -> dict[str, Any]:
    """(vae spatial, vae temporal, patch (t, h, w), rope) from ``transformer`` / ``vae`` configs."""
    t, vae = configs.get("transformer") or {}, configs.get("vae") or {}
    return {"spatial": int(vae.get("scale_factor_spatial") or DEFAULT_VAE_SPATIAL),
            "temporal": int(vae.get("scale_factor_temporal") or DEFAULT_VAE_TEMPORAL),
            "patch": tuple(int(p) for p in (t.get("patch_size") or DEFAULT_PATCH)),
            "rope": int(t.get("rope_max_seq_len") or DEFAULT_ROPE)}


def _side(spatial: int, patch: int, rope: int) -> SizeGrid:
    step = spatial * patch
    return SizeGrid(step=step, lo=step, hi=min(MAX_SIDE, rope * step),
                    why_step=f"the VAE's spatial factor {spatial} x patch {patch}",
                    why_lo="one latent patch", why_hi=(f"rope_max_seq_len {rope} patches"
                                                       if rope * step <= MAX_SIDE else ""))


def _frames(temporal: int, patch: int, rope: int) -> SizeGrid:
    # latent frames (frames - 1) / temporal + 1 must be a whole number of temporal patches
    step = temporal * patch
    first = temporal * (patch - 1) + 1
    top = temporal * (rope * patch - 1) + 1
    return SizeGrid(step=step, offset=first % step, lo=first, hi=min(MAX_FRAMES, top),
                    why_step=f"the VAE's temporal factor {temporal}"
                             + (f" x patch {patch}" if patch > 1 else ""),
                    why_hi=f"rope_max_seq_len {rope} patches" if top <= MAX_FRAMES else "")


def wan_limits(configs: dict[str, Any], name: str) -> VideoLimits:
    """The sizes the checkpoint whose configs these are can produce; ``name`` says which."""
    g = wan_geometry(configs)
    pt, ph, pw = g["patch"]
    return VideoLimits(teacher=f"the wan teacher ({name})",
                       height=_side(g["spatial"], ph, g["rope"]),
                       width=_side(g["spatial"], pw, g["rope"]),
                       frames=_frames(g["temporal"], pt, g["rope"]))
