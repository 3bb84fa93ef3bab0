"""A Wan checkpoint as files: config JSONs, tokenizer and safetensors digests, read without
instantiating a module (the Ray driver's view), and the same digests recomputed where an actor
loaded the weights (the check that it loaded what the job fingerprinted).

Digests are sha256 of file bytes: for a hub id they come from the hub's LFS metadata at a pinned
revision (nothing downloaded but configs and the tokenizer); for a local folder the files are
hashed (about 1 GB/s; the A14B checkpoint is ~120 GB of safetensors in float32).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COMPONENTS = ("transformer", "transformer_2", "text_encoder", "vae")  # weights, fingerprinted
SMALL_FILES = ("*.json", "*.txt", "*.model", "tokenizer/*")  # what the driver downloads
LIBRARIES = ("diffusers", "transformers", "torch", "tokenizers", "ftfy")


def has_two_experts(model_index: dict[str, Any]) -> bool:
    """model_index.json names transformer_2 as [library, class]; [null, null] when absent."""
    value = model_index.get("transformer_2")
    return bool(value) and value[0] is not None


def library_versions() -> dict[str, str | None]:
    """Versions that change the teacher's numbers or text cleaning; None = not installed
    (ftfy: diffusers' prompt_clean only fixes text when it is present)."""
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(kw_only=True, slots=True)
class Checkpoint:
    """A resolved checkpoint: where its small files are, and the digest of every file."""

    source: str  # local folder or hub id, as configured
    revision: str | None  # the pinned hub commit (None for a local folder)
    folder: Path  # local folder holding at least the configs and the tokenizer
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    staged: str | None = None  # sha256 of the digest file of the staged copy it was loaded from

    def config(self, component: str) -> dict[str, Any] | None:
        name = "model_index.json" if component == "" else f"{component}/config.json"
        if component == "scheduler":
            name = "scheduler/scheduler_config.json"
        path = self.folder / name
        return json.loads(path.read_text()) if path.exists() else None

    def component_files(self, component: str) -> dict[str, str]:
        return {k: v for k, v in self.files.items() if k.startswith(f"{component}/")}


def is_weight(rel: str) -> bool:
    return rel.endswith((".safetensors", ".bin", ".pth"))


def resolve_local(folder: str, *, hash_weights: bool = True) -> Checkpoint:
    root = Path(folder)
    if not (root / "model_index.json").exists():
        raise FileNotFoundError(f"{folder} is not a diffusers checkpoint folder (no model_index.json)")
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith("."):
            if rel.endswith((".bin", ".pth")):
                raise ValueError(f"{folder}/{rel}: pickled weights are refused (never unpickled); "
                                 "convert the checkpoint to safetensors")
            if hash_weights or not is_weight(rel):
                files[rel] = sha256_file(path)
    return Checkpoint(source=folder, revision=None, folder=root, files=files)


def resolve_hub(repo_id: str, revision: str | None) -> Checkpoint:
    """Configs and tokenizer downloaded at a pinned commit; weight digests from LFS metadata."""
    from huggingface_hub import HfApi, snapshot_download

    try:
        info = HfApi().model_info(repo_id, revision=revision, files_metadata=True)
        folder = snapshot_download(repo_id, revision=info.sha, allow_patterns=list(SMALL_FILES))
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, network: one readable error
        raise OSError(f"cannot resolve {repo_id}@{revision or 'main'} on the hub "
                      f"({type(exc).__name__}: {str(exc)[:200]})") from None
    files = {}
    for sibling in info.siblings:
        if sibling.lfs is not None:
            files[sibling.rfilename] = sibling.lfs.sha256
        elif not is_weight(sibling.rfilename) and (Path(folder) / sibling.rfilename).exists():
            files[sibling.rfilename] = sha256_file(Path(folder) / sibling.rfilename)
    return Checkpoint(source=repo_id, revision=info.sha, folder=Path(folder), files=files)


def resolve_checkpoint(source: str, revision: str | None) -> Checkpoint:
    if os.path.isdir(source):
        if revision:
            raise ValueError(f"revision {revision!r} is for hub ids; {source} is a local folder")
        return resolve_local(source)
    if os.path.exists(source) or source.startswith((".", "/")) or source.count("/") != 1:
        raise FileNotFoundError(f"Wan checkpoint {source!r} is neither a local diffusers folder "
                                "nor a hub id (owner/name)")
    return resolve_hub(source, revision)


_DROP = {"transformers_version", "dtype", "torch_dtype", "_name_or_path", "_diffusers_version",
         "_commit_hash", "_use_default_values", "_attn_implementation_autoset"}
CONFIG_PARTS = ("model_index", "scheduler", "transformer", "transformer_2", "text_encoder", "vae")


def clean_config(config: dict[str, Any]) -> dict[str, Any]:
    """A config as JSON values, without keys that record who saved it rather than what it is."""
    kept = {k: v for k, v in config.items() if k not in _DROP}
    return json.loads(json.dumps(kept, default=str, sort_keys=True))


def file_configs(ckpt: Checkpoint) -> dict[str, Any]:
    """The configs the checkpoint's JSON files hold (model_index, scheduler and each model)."""
    out = {}
    for part in CONFIG_PARTS:
        cfg = ckpt.config("" if part == "model_index" else part)
        if cfg is not None:
            out[part] = clean_config(cfg)
    return out
