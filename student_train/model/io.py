"""Persistence (safetensors weights + JSON config on any fsspec URL) and per-block costs.

The functions take the model (or its class) as an argument and never import ``sandwich``,
which imports this module: an S2DiT here is any module with ``config`` (and ``blocks``)."""

from __future__ import annotations

import json
from typing import TypeVar

import fsspec
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from .config import StudentConfig

Model = TypeVar("Model", bound=torch.nn.Module)

WEIGHTS, CONFIG = "model.safetensors", "config.json"


def save_pretrained(model: torch.nn.Module, url: str) -> None:
    fs, root = fsspec.core.url_to_fs(url)
    fs.makedirs(root, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    fs.pipe_file(f"{root}/{WEIGHTS}", save_safetensors(tensors, metadata={"format": "pt"}))
    fs.pipe_file(f"{root}/{CONFIG}", json.dumps(model.config.to_json(), indent=1).encode())


def load_pretrained(cls: type[Model], url: str, device: str | torch.device = "cpu") -> Model:
    """The S2DiT of a save_pretrained folder; its weights are checked against its config.json
    (names, shapes, dtypes from the safetensors header, then finite values) before loading."""
    from student_train.checkpoint_check import check_finite, check_modules, read_header

    fs, root = fsspec.core.url_to_fs(url)
    try:
        config = StudentConfig.from_json(json.loads(fs.cat_file(f"{root}/{CONFIG}")))
        payload = fs.cat_file(f"{root}/{WEIGHTS}")
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{url} holds no S2DiT ({CONFIG} + {WEIGHTS}); save one with "
                                f"S2DiT.save_pretrained: {exc}") from None
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{url}/{CONFIG} is not an S2DiT config ({type(exc).__name__}: "
                         f"{str(exc)[:120]})") from None
    model = cls(config)
    check_modules(read_header(payload, url), {"": model}, url,
                  f"the weights do not fit its {CONFIG} (save it again with S2DiT.save_pretrained)")
    try:
        weights = load_safetensors(payload)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type
        raise ValueError(f"{url}/{WEIGHTS} is corrupt or unreadable: {exc}") from None
    check_finite(weights, ("",), url)
    model.load_state_dict(weights)
    return model.to(device)


def example_inputs(config: StudentConfig, batch: int = 1, frames: int | None = None,
                   text_len: int = 8, device=None, dtype=torch.float32):
    """Random (x, sigma, step_size, text_emb, text_mask) of the configured shapes."""
    g = torch.Generator().manual_seed(0)
    f = config.latent_frames if frames is None else frames
    x = torch.randn(batch, config.latent_channels, f, config.latent_height, config.latent_width,
                    generator=g)
    text = torch.randn(batch, text_len, config.text_dim, generator=g)
    out = (x, torch.rand(batch, generator=g), torch.zeros(batch), text,
           torch.ones(batch, text_len, dtype=torch.bool))
    return tuple(t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype) for t in out)


def block_costs(model: torch.nn.Module, frames: int | None = None) -> list[dict]:
    """Parameters and forward FLOPs (matmul, conv and attention ops; 2 per multiply-add) of
    each block for one clip of ``frames`` latent frames (default: the configured clip),
    bidirectional. Measured with torch's FlopCounterMode on a real forward pass."""
    cfg = model.config
    inputs = example_inputs(cfg, 1, frames, device=next(model.parameters()).device)
    # the math SDPA backend decomposes into matmuls the counter sees (fused CPU kernels are not)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(*inputs)
    counts = counter.get_flop_counts()
    rows = []
    for i, (spec, block) in enumerate(zip(cfg.layout, model.blocks)):
        flops = sum(counts.get(f"S2DiT.blocks.{i}", {}).values())
        rows.append({"index": i, "block": spec, "params": sum(p.numel() for p in block.parameters()),
                     "flops": int(flops)})
    return rows
