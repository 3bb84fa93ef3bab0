"""Checkpoints checked against the model before loading (issue 28): a wrong shape, a missing or
extra tensor, another dtype or NaN weights is one line naming the first mismatching tensor for
sample, eval, export and resume (before: load_state_dict's traceback, or NaN accepted)."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from cache_factory import make_cache
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from pipeline.cli import main
from student_train.checkpoint import STATE, TENSORS, latest_checkpoint
from student_train.checkpoint_check import CheckpointMismatch
from student_train.config import TrainConfig
from student_train.model import S2DiT, StudentConfig
from student_train.student import StudentCheckpoint
from student_train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
FUZZ = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _kd(**kw) -> TrainConfig:
    return TrainConfig(**{"steps": 1, "batch_size": 4, "checkpoint_every": 1, "log_every": 1,
                          "warmup_steps": 1, "model": {"dim": 24, "heads": 2}, **kw})


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return make_cache(tmp_path_factory.mktemp("ckcheck") / "cache", seeds=1)


@pytest.fixture(scope="module")
def kd_run(cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckcheck_kd") / "run"
    Trainer(cache, str(out), _kd()).run(progress=False)
    return out


def _copy(kd_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "run"
    shutil.copytree(kd_run, out)
    return out, Path(latest_checkpoint(str(out)))


def _rewrite(folder: Path, payload: bytes) -> None:
    """Replace the tensors file and re-pin its sha256 (what a forger or a buggy tool does)."""
    (folder / TENSORS).write_bytes(payload)
    state = json.loads((folder / STATE).read_text())
    state["tensors_sha256"] = hashlib.sha256(payload).hexdigest()
    (folder / STATE).write_text(json.dumps(state))


def _tamper(tensors: dict[str, torch.Tensor], how: str) -> tuple[dict[str, torch.Tensor], str]:
    """One change to the EMA weights and the tensor the refusal must name."""
    tensors = dict(tensors)
    name = min(k for k in tensors if k.startswith("ema.") and tensors[k].dim() == 2)
    if how == "shape":
        tensors[name] = torch.zeros(tensors[name].shape[0] + 1, tensors[name].shape[1])
    elif how == "missing":
        del tensors[name]
    elif how == "extra":
        name = "ema.blocks.99.extra.weight"
        tensors[name] = torch.zeros(2)
    elif how == "dtype":
        tensors[name] = tensors[name].double()
    elif how == "nan":
        tensors[name] = tensors[name].clone()
        tensors[name][0, 0] = float("nan")
    return tensors, name


@pytest.mark.parametrize("how", ["shape", "missing", "extra", "dtype", "nan"])
def test_a_checkpoint_that_does_not_fit_its_model_names_the_first_tensor(kd_run, tmp_path, capsys, how):
    out, folder = _copy(kd_run, tmp_path)
    tensors, name = _tamper(st_load((folder / TENSORS).read_bytes()), how)
    _rewrite(folder, st_save(tensors))
    with pytest.raises(CheckpointMismatch, match=f"tensor {name}"):
        StudentCheckpoint.load(str(out))
    if how not in ("shape", "nan"):
        return
    # the commands: sample, eval, export; one error line each, nothing written
    for argv in (["sample", "--checkpoint", str(out), "--prompt", "a red ring moving left",
                  "--out", str(tmp_path / "s")],
                 ["eval", "--checkpoint", str(out), "--per-class", "1"],
                 ["export", "--model", str(out), "--out", str(tmp_path / "e.pt2")]):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
        assert f"tensor {name}" in captured.err and "Traceback" not in captured.err + captured.out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_resuming_under_another_model_config_names_the_first_tensor(cache, kd_run, tmp_path):
    out, _ = _copy(kd_run, tmp_path)
    with pytest.raises(CheckpointMismatch, match=r"tensor model\.\S+ has shape .* model config it "
                                                 r"was trained with"):
        Trainer(cache, str(out), _kd(steps=2, model={"dim": 32, "heads": 2}))
    resumed = Trainer(cache, str(out), _kd(steps=2))  # its own config still resumes
    assert resumed.step == 1


def test_save_pretrained_weights_are_checked_against_their_config(tmp_path):
    torch.manual_seed(0)
    model = S2DiT(StudentConfig(dim=24, heads=2))
    model.save_pretrained(str(tmp_path / "m"))
    S2DiT.from_pretrained(str(tmp_path / "m"))
    weights = st_load((tmp_path / "m" / "model.safetensors").read_bytes())
    name = min(weights)
    weights[name] = weights[name].clone().fill_(float("inf"))
    (tmp_path / "m" / "model.safetensors").write_bytes(st_save(weights))
    with pytest.raises(CheckpointMismatch, match=f"tensor {name} holds NaN or infinite"):
        S2DiT.from_pretrained(str(tmp_path / "m"))
    del weights[name]
    (tmp_path / "m" / "model.safetensors").write_bytes(st_save(weights))
    with pytest.raises(CheckpointMismatch, match=f"tensor {name} is missing"):
        S2DiT.from_pretrained(str(tmp_path / "m"))


def _split(payload: bytes) -> tuple[dict, bytes]:
    size = struct.unpack("<Q", payload[:8])[0]
    return json.loads(payload[8:8 + size]), payload[8 + size:]


def _join(header: object, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _json() -> st.SearchStrategy:
    leaves = (st.none() | st.booleans() | st.integers(-2**66, 2**66) | st.floats()
              | st.sampled_from(["F32", "F64", "F16", "BF16", "I64", "BOOL", "X9"]) | st.text(max_size=6))
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)


@FUZZ
@given(data=st.data())
def test_any_mutated_checkpoint_header_loads_or_is_one_value_error(kd_run, tmp_path_factory, data):
    out, folder = _copy(kd_run, tmp_path_factory.mktemp("fuzz"))
    header, body = _split((folder / TENSORS).read_bytes())
    names = sorted(header)
    for _ in range(data.draw(st.integers(1, 3))):
        name = data.draw(st.sampled_from(names))
        field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets", "whole", "rename", "drop"]))
        if field == "whole":
            header[name] = data.draw(_json())
        elif field == "rename":
            header[data.draw(st.text(max_size=20))] = header.pop(name, None)
        elif field == "drop":
            header.pop(name, None)
        elif isinstance(header.get(name), dict):
            header[name][field] = data.draw(_json())
    payload = _join(header, body if data.draw(st.booleans()) else body[: data.draw(st.integers(0, len(body)))])
    _rewrite(folder, payload)
    try:
        StudentCheckpoint.load(str(out))
    except ValueError as exc:  # CheckpointMismatch and the loader's own refusals
        assert "\n" not in str(exc) and str(exc).startswith(("checkpoint ", "run ")), str(exc)
