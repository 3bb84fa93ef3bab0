"""The attention kernel of the Wan experts (issue 27): ``[job.teacher] attention_backend``.

Unset means diffusers' default, torch SDPA (``native``), which picks its own kernel (on CUDA in
bf16 usually its FlashAttention-2 path). Attention is 52% of an A14B sample's FLOPs at 480P and
72% at 720P, and the official timings the cost model is calibrated on ran FlashAttention (FA3 on
Hopper), so a GPU job may ask for a diffusers backend by name: ``_native_cudnn`` (torch's cuDNN
attention, no extra package), ``flash`` (the flash-attn package), ``_flash_3`` (FA3, Hopper).
A backend is probed once where the teacher is built, on its device and dtype, and refused with
the reason when it cannot run there (a CUDA kernel on a CPU actor, a package not installed),
before any sample. Hub backends (``*_hub``) download kernels at run time: refused, the image is
pinned and actors never ask the hub. The backend is in the fingerprint: kernels round
differently, so caches made with different backends are never mixed.
"""

from __future__ import annotations

import torch

CPU_BACKENDS = ("native", "_native_math", "_native_flash")  # run on CPU (tests compare them)


def backend_names() -> list[str]:
    from diffusers.models.attention_dispatch import AttentionBackendName

    return [b.value for b in AttentionBackendName]


def check_backend_name(name: str) -> None:
    """Names only (the driver, no device): a diffusers backend that needs no download."""
    names = backend_names()
    if name not in names:
        raise ValueError(f"attention_backend {name!r} is not a diffusers backend; choose one of "
                         f"{', '.join(n for n in names if not n.endswith('_hub'))}")
    if name.endswith("_hub"):
        raise ValueError(f"attention_backend {name!r} downloads its kernel from the hub at run "
                         f"time; the image is pinned and actors never ask the hub: use "
                         f"{name.removesuffix('_hub')!r} with the package in the image, or leave "
                         "it unset (torch SDPA)")


def probe_backend(name: str, device: torch.device, dtype: torch.dtype) -> None:
    """Run one small attention call through ``name`` on ``device`` in ``dtype``; refuse the
    backend with the reason when it cannot run here."""
    from diffusers.models.attention_dispatch import (
        AttentionBackendName,
        _check_attention_backend_requirements,
        dispatch_attention_fn,
    )

    check_backend_name(name)
    backend = AttentionBackendName(name)
    try:
        _check_attention_backend_requirements(backend)  # the package is installed
        q = torch.randn(1, 16, 2, 64, device=device, dtype=dtype)  # (B, tokens, heads, head_dim)
        dispatch_attention_fn(q, q, q, backend=backend)
    except Exception as exc:  # noqa: BLE001 - every failure here means "cannot run here"
        where = f"{device.type} in {str(dtype).removeprefix('torch.')}"
        hint = (f"on CPU use one of {', '.join(CPU_BACKENDS)} or leave it unset"
                if device.type == "cpu" else "leave it unset (torch SDPA) or install its package")
        raise ValueError(f"attention_backend {name!r} cannot run on {where} "
                         f"({type(exc).__name__}: {str(exc)[:200]}): {hint}") from None
