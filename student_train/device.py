"""The torch device a setting names, checked on this machine before any model is built.

``--device cuda`` (or ``device = "cuda"`` in a config) on a machine without CUDA would otherwise
fail deep inside torch (an AssertionError, "Torch not compiled with CUDA enabled") after the
cache and the model were loaded; here it is one ValueError naming the setting and the way out.
"""

from __future__ import annotations

import torch


def check_device(device: str, setting: str = "--device") -> torch.device:
    """``device`` as a torch.device; a ValueError naming ``setting`` (the flag or config key
    that chose it) when this machine cannot run it."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"{setting} {device!r} is not a torch device ({exc}); use cpu or cuda") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = ("a CPU build" if torch.version.cuda is None
                     else f"built for CUDA {torch.version.cuda}, but it sees no GPU")
            raise ValueError(f"{setting} is {device!r} but this machine has no CUDA device (torch "
                             f"{torch.__version__} is {build}): use --device cpu, or install a "
                             "CUDA build of torch on a machine with a GPU")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"{setting} is {device!r} but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s): use cuda:0 .. "
                             f"cuda:{torch.cuda.device_count() - 1}")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{setting} is {device!r} but MPS is not available here: use --device cpu")
    return parsed
