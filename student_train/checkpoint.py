"""Checkpoints on any fsspec URL: safetensors tensors (model, EMA, optimizer) + JSON state.

``<out>/checkpoints/step_000600/`` holds ``model.safetensors`` (model.*, ema.*, optim.*, and
for stage 2 also critic.*, real.*, critic_optim.*) and
``state.json`` (stage, step, RNG states, loader state, resolved configs, manifest id and generation,
the sha256 of the tensors file). The tensors are written first, ``state.json`` second (a folder
without it is an incomplete save) and ``LATEST`` last, so a crash mid-save leaves the previous
checkpoint as the newest one; loading checks the tensors against their sha256, so a truncated
or altered file is refused by name. Object stores have no atomic folder rename, hence the
ordering instead of a temporary folder. Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Mapping
from typing import Any

import fsspec
import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from cache_schema.redact import redact_secrets

from .checkpoint_check import check_finite, check_modules, read_header

TENSORS, STATE, LATEST = "model.safetensors", "state.json", "LATEST"
STEP_NAME = re.compile(r"step_\d{6,12}")  # what save_checkpoint names a checkpoint folder
MAX_LATEST_BYTES = 64


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
    # extra holds the resolved configs: recorded, so never with a credential
    state = {"step": step, "rng": rng_state(), "optimizer": opt_meta, **redact_secrets(extra)}
    for prefix, opt in (optimizers or {}).items():
        more, meta = _optimizer_tensors(opt, prefix)
        tensors.update(more)
        state.setdefault("optimizers", {})[prefix] = meta
    folder = f"{root}/checkpoints/{name}"
    fs.makedirs(folder, exist_ok=True)
    if fs.exists(f"{folder}/{STATE}"):  # an unpublished save of this step (a crash after it)
        fs.rm_file(f"{folder}/{STATE}")
    payload = st_save(tensors)
    state["tensors_sha256"] = hashlib.sha256(payload).hexdigest()
    fs.pipe_file(f"{folder}/{TENSORS}", payload)
    fs.pipe_file(f"{folder}/{STATE}", json.dumps(state, indent=1).encode())  # marks it complete
    fs.pipe_file(f"{root}/checkpoints/{LATEST}", name.encode())  # published last
    return f"{out_url.rstrip('/')}/checkpoints/{name}"


def latest_checkpoint(out_url: str) -> str | None:
    """The checkpoint ``checkpoints/LATEST`` names (None: no published one). LATEST is data: it
    may name only a ``step_N`` folder beside it, never a path elsewhere."""
    fs, root = fsspec.core.url_to_fs(out_url)
    try:
        raw = fs.cat_file(f"{root}/checkpoints/{LATEST}", start=0, end=MAX_LATEST_BYTES + 1)
    except FileNotFoundError:
        return None
    name = raw.decode("utf-8", "replace").strip()
    if len(raw) > MAX_LATEST_BYTES or not STEP_NAME.fullmatch(name):
        shown = name[:40] + ("..." if len(name) > 40 else "")
        raise ValueError(f"{out_url.rstrip('/')}/checkpoints/{LATEST} names {shown!r}, not a "
                         "checkpoint folder beside it (step_NNNNNN); restore it with the name "
                         "of the newest complete checkpoints/step_N, or delete it to start over")
    return f"{out_url.rstrip('/')}/checkpoints/{name}"


def finished_checkpoint(out: str, steps: int, what: str) -> str:
    """The newest checkpoint in ``out``, which must be the last step (else the run stopped)."""
    checkpoint = latest_checkpoint(out)
    step = int(checkpoint.rsplit("step_", 1)[1]) if checkpoint else 0
    if checkpoint is None or step < steps:
        raise RuntimeError(f"{what} stopped at step {step} of {steps} ({out}); rerun to resume")
    return checkpoint


def load_checkpoint(url: str, expect: Callable[[dict[str, Any]], Mapping[str, torch.nn.Module]]
                    | None = None, fix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, state) of a checkpoint folder. ``expect(state)``: the modules its tensors must
    fit, by prefix ({"ema": model}); their names, shapes and dtypes are checked from the
    safetensors header before any tensor is made, their values after (finite), each mismatch
    one CheckpointMismatch naming the tensor and ending with ``fix``."""
    fs, root = fsspec.core.url_to_fs(url)
    try:
        state = json.loads(fs.cat_file(f"{root}/{STATE}"))
        payload = fs.cat_file(f"{root}/{TENSORS}")
    except FileNotFoundError:
        raise FileNotFoundError(f"{url} is not a complete checkpoint ({TENSORS} + {STATE}); pass "
                                "a published checkpoints/step_N folder or a training output URL "
                                "(its checkpoints/LATEST names the newest complete one)") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"checkpoint {url}: {STATE} is corrupt ({type(exc).__name__}); use an "
                         "earlier checkpoints/step_N") from None
    expected = state.get("tensors_sha256")  # absent in checkpoints of older versions
    if expected and hashlib.sha256(payload).hexdigest() != expected:
        raise ValueError(f"checkpoint {url}: {TENSORS} does not match the sha256 in {STATE} "
                         "(truncated or altered); use an earlier checkpoints/step_N")
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {url}: {STATE} is not a JSON object; use an earlier "  # noqa: TRY004
                         "checkpoints/step_N")
    header = read_header(payload, url)  # bounded, before anything is allocated for a tensor
    modules = expect(state) if expect is not None else {}
    check_modules(header, modules, url, fix or "use a checkpoint of this model")
    try:
        tensors = st_load(payload)
    except Exception as exc:
        raise ValueError(f"checkpoint {url}: {TENSORS} is corrupt or unreadable: {exc}") from exc
    check_finite(tensors, tuple(modules), url)
    return tensors, state


def model_config(state: dict[str, Any], url: str):
    """The StudentConfig a checkpoint's state.json records (ValueError naming it if absent or
    invalid)."""
    from .model import StudentConfig  # the model package imports torch modules; only here

    try:
        return StudentConfig.from_json(state["model_config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint {url}: {STATE} has no valid model_config ({type(exc).__name__}: "
                         f"{str(exc)[:120]}); use a checkpoint written by s2dit train") from None


def checkpoint_stage(state: dict[str, Any]) -> str:
    """The stage a checkpoint's ``state.json`` names: "kd" (stage 1), "causal" or "ar"
    (stage 2). Stage-1 checkpoints written before every checkpoint named its stage have no
    ``stage`` key: they are "kd"."""
    return str(state.get("stage", "kd"))


def split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def restore_optimizer(optimizer, tensors, state, prefix: str = "optim") -> None:
    meta = state["optimizer"] if prefix == "optim" else state["optimizers"][prefix]
    optimizer.load_state_dict(_optimizer_state(tensors, meta, prefix))
