"""Checkpoints on any fsspec URL: safetensors tensors (model, EMA, optimizer) + JSON state.

``<out>/checkpoints/step_000600/`` holds ``model.safetensors`` (model.*, ema.*, optim.*, and
for stage 2 also critic.*, real.*, critic_optim.*) and
``state.json`` (step, RNG states, loader state, resolved configs, manifest id and generation).
Written to a temporary folder name first, then published by writing ``LATEST`` last, so a
crash mid-save leaves the previous checkpoint as the newest one. Nothing is pickled.
"""

from __future__ import annotations

import json
import random
from typing import Any

import fsspec
import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

TENSORS, STATE, LATEST = "model.safetensors", "state.json", "LATEST"


def _optimizer_tensors(opt: torch.optim.Optimizer, prefix: str = "optim"
                       ) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict, prefix: str = "optim") -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state().tolist(), "numpy": np.random.get_state()[1].tolist(),
            "python": list(random.getstate()[1])}


def save_checkpoint(out_url: str, step: int, *, model, ema, optimizer, extra: dict[str, Any],
                    modules: dict[str, torch.nn.Module] | None = None,
                    optimizers: dict[str, torch.optim.Optimizer] | None = None) -> str:
    """``modules`` / ``optimizers``: further ones saved under their name as tensor prefix (an
    optimizer's non-tensor state goes to ``state["optimizers"][name]``; see restore_optimizer)."""
    fs, root = fsspec.core.url_to_fs(out_url)
    name = f"step_{step:06d}"
    tensors = {}
    for prefix, module in {"model": model, "ema": ema, **(modules or {})}.items():
        tensors.update({f"{prefix}.{k}": v.detach().cpu().contiguous()
                        for k, v in module.state_dict().items()})
    opt_tensors, opt_meta = _optimizer_tensors(optimizer)
    tensors.update(opt_tensors)
    state = {"step": step, "rng": rng_state(), "optimizer": opt_meta, **extra}
    for prefix, opt in (optimizers or {}).items():
        more, meta = _optimizer_tensors(opt, prefix)
        tensors.update(more)
        state.setdefault("optimizers", {})[prefix] = meta
    folder = f"{root}/checkpoints/{name}"
    fs.makedirs(folder, exist_ok=True)
    fs.pipe_file(f"{folder}/{TENSORS}", st_save(tensors))
    fs.pipe_file(f"{folder}/{STATE}", json.dumps(state, indent=1).encode())
    fs.pipe_file(f"{root}/checkpoints/{LATEST}", name.encode())  # published last
    return f"{out_url.rstrip('/')}/checkpoints/{name}"


def latest_checkpoint(out_url: str) -> str | None:
    fs, root = fsspec.core.url_to_fs(out_url)
    try:
        name = fs.cat_file(f"{root}/checkpoints/{LATEST}").decode().strip()
    except FileNotFoundError:
        return None
    return f"{out_url.rstrip('/')}/checkpoints/{name}"


def load_checkpoint(url: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    fs, root = fsspec.core.url_to_fs(url)
    try:
        tensors = st_load(fs.cat_file(f"{root}/{TENSORS}"))
        state = json.loads(fs.cat_file(f"{root}/{STATE}"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{url} is not a checkpoint ({TENSORS} + {STATE}); pass a "
                                "checkpoints/step_N folder or a training output URL") from None
    except Exception as exc:
        raise ValueError(f"checkpoint {url} is corrupt or unreadable: {exc}") from exc
    return tensors, state


def split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def restore_optimizer(optimizer, tensors, state, prefix: str = "optim") -> None:
    meta = state["optimizer"] if prefix == "optim" else state["optimizers"][prefix]
    optimizer.load_state_dict(_optimizer_state(tensors, meta, prefix))
