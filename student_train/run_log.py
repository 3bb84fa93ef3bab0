"""Where a training run's metrics go besides metrics.jsonl (both stages)."""

from __future__ import annotations


def tensorboard_writer(out_url: str, root: str):
    """A TensorBoard writer under ``<out>/tensorboard`` for local outputs; None for remote ones
    (TensorBoard's writer needs a local path; metrics.jsonl is written everywhere)."""
    if "://" in out_url and not out_url.startswith("file://"):
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(f"{root}/tensorboard")
