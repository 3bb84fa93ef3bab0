"""Checkpoints: safetensors + JSON only, published last, refused by name when incomplete or altered."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from student_train.checkpoint import (
    LATEST,
    STATE,
    TENSORS,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    split_prefix,
)


def _save(out: str, step: int) -> str:
    torch.manual_seed(step)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return save_checkpoint(out, step, model=model, ema=copy.deepcopy(model), optimizer=opt,
                           extra={"note": step})


def test_round_trip_and_latest(tmp_path):
    first, second = _save(str(tmp_path), 1), _save(str(tmp_path), 2)
    assert latest_checkpoint(str(tmp_path)) == second
    tensors, state = load_checkpoint(first)
    assert state["note"] == 1 and set(split_prefix(tensors, "model")) == {"weight", "bias"}
    assert (tmp_path / "checkpoints" / LATEST).read_text() == "step_000002"


def test_altered_truncated_or_incomplete_checkpoints_are_refused_by_name(tmp_path):
    url = _save(str(tmp_path), 1)
    folder = tmp_path / "checkpoints" / "step_000001"
    tensors = folder / TENSORS
    original = tensors.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0x01  # a flipped bit inside a weight: safetensors alone loads it
    tensors.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{TENSORS} does not match the sha256"):
        load_checkpoint(url)
    tensors.write_bytes(original[:-10])
    with pytest.raises(ValueError, match="truncated or altered"):
        load_checkpoint(url)
    tensors.write_bytes(original)
    load_checkpoint(url)  # restored: loads again
    (folder / STATE).write_text("{not json")
    with pytest.raises(ValueError, match=f"{STATE} is corrupt"):
        load_checkpoint(url)
    (folder / STATE).unlink()  # a save that crashed before its state was written
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        load_checkpoint(url)


def test_resaving_a_step_replaces_an_unpublished_save(tmp_path):
    _save(str(tmp_path), 1)
    folder = tmp_path / "checkpoints" / "step_000002"
    folder.mkdir()
    (folder / TENSORS).write_bytes(b"half a file")  # a crash mid-save of step 2
    assert latest_checkpoint(str(tmp_path)).endswith("step_000001")  # never published
    url = _save(str(tmp_path), 2)
    assert json.loads((folder / STATE).read_text())["note"] == 2
    load_checkpoint(url)
