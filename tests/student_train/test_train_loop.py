"""The one loop core of both stages (student_train/loop.py): checkpoints name their stage (old
stage-1 ones without the key still read as "kd"), a run resumes only its own stage, both stages
write the same metrics columns, and the shared config fields are declared once."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from cache_factory import make_cache

from student_train.checkpoint import checkpoint_stage, latest_checkpoint
from student_train.config import StageConfig, TrainConfig
from student_train.self_forcing import ARConfig, ARTrainer
from student_train.self_forcing.source import load_kd_source
from student_train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

LOOP_COLUMNS = {"step", "phase", "lr", "step_seconds", "samples_per_s", "loader_wait_s",
                "skipped_shards"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return make_cache(tmp_path_factory.mktemp("loop") / "cache", seeds=1)


def _kd(**kw) -> TrainConfig:
    return TrainConfig(**{"steps": 2, "batch_size": 4, "checkpoint_every": 1, "log_every": 1,
                          "warmup_steps": 1, "model": {"dim": 24, "heads": 2}, **kw})


def _ar(**kw) -> ARConfig:
    return ARConfig(**{"causal_steps": 1, "steps": 1, "batch_size": 4, "checkpoint_every": 1,
                       "log_every": 1, **kw})


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _state(checkpoint: str) -> dict:
    return json.loads((Path(checkpoint) / "state.json").read_text())


@pytest.fixture(scope="module")
def kd_run(cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("loop_kd") / "run"
    Trainer(cache, str(out), _kd()).run(progress=False)
    return out


def test_kd_checkpoints_say_kd_and_old_ones_without_the_key_still_read_as_kd(cache, kd_run, tmp_path):
    newest = latest_checkpoint(str(kd_run))
    state = _state(newest)
    assert state["stage"] == "kd" and checkpoint_stage(state) == "kd"
    # a checkpoint of an older version: the same tensors, no "stage" in its state
    old = tmp_path / "old"
    (old / "checkpoints").mkdir(parents=True)
    folder = old / "checkpoints" / Path(newest).name
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((Path(newest) / "model.safetensors").read_bytes())
    del state["stage"]
    (folder / "state.json").write_text(json.dumps(state))
    (old / "checkpoints" / "LATEST").write_text(folder.name)
    assert checkpoint_stage(state) == "kd"
    assert load_kd_source(str(old)).step == 2  # stage 2 starts from it
    resumed = Trainer(cache, str(old), _kd(steps=3))  # stage 1 continues it
    assert resumed.step == 2
    resumed.run(progress=False)
    assert resumed.step == 3 and _state(latest_checkpoint(str(old)))["stage"] == "kd"


def test_both_stages_write_the_loop_s_columns_and_name_their_phases(cache, kd_run, tmp_path):
    kd_rows = _rows(kd_run)
    assert [r["phase"] for r in kd_rows] == ["kd", "kd"] and [r["step"] for r in kd_rows] == [1, 2]
    assert all(LOOP_COLUMNS | {"loss", "kd_loss", "grad_norm"} <= set(r) for r in kd_rows)
    ar = ARTrainer(latest_checkpoint(str(kd_run)), cache, str(tmp_path / "ar"), _ar())
    ar.run(progress=False)
    ar_rows = _rows(tmp_path / "ar")
    assert [r["phase"] for r in ar_rows] == ["causal", "dmd"]
    assert all(LOOP_COLUMNS | {"causal_step", "dmd_step", "grad_norm"} <= set(r) for r in ar_rows)
    assert set(ar.phase_seconds) == {"causal", "dmd"} and ar.train_seconds > 0


def test_a_run_resumes_only_its_own_stage_and_a_stage_2_checkpoint_is_no_init(cache, kd_run,
                                                                                  tmp_path):
    kd = latest_checkpoint(str(kd_run))
    out = tmp_path / "ar"
    ARTrainer(kd, cache, str(out), _ar(steps=0)).run(progress=False)  # causal phase only
    causal = latest_checkpoint(str(out))
    assert _state(causal)["stage"] == "causal"
    with pytest.raises(ValueError, match="holds a run of stage 'causal'.*use a new --out"):
        Trainer(cache, str(out), _kd())
    with pytest.raises(ValueError, match="holds a run of stage 'kd'.*use a new --out"):
        ARTrainer(kd, cache, str(kd_run), _ar())
    with pytest.raises(ValueError, match="is a stage-2 'causal' checkpoint; --init takes"):
        ARTrainer(causal, cache, str(tmp_path / "x"), _ar())


def test_shared_fields_are_declared_once_and_configs_round_trip_through_json():
    shared = {f.name for f in dataclasses.fields(StageConfig)}
    assert {"lr", "betas", "warmup_steps", "checkpoint_every", "prefetch_shards", "seed"} <= shared
    for cls in (TrainConfig, ARConfig):
        assert shared <= {f.name for f in dataclasses.fields(cls)}
        config = cls()
        back = cls(**json.loads(json.dumps(config.to_json())))
        assert back == config and isinstance(back.betas, tuple)
    assert TrainConfig().prefetch_shards == ARConfig().prefetch_shards == 8
    assert (ARConfig().lr, ARConfig().betas) == (1e-4, (0.0, 0.99))  # stage 2's own recipe
    with pytest.raises(ValueError, match="log_every"):
        ARConfig(log_every=0)
    assert TrainConfig.load(None, lr=0.5, seed=None).lr == 0.5  # None: not overridden


class _Clock:
    """A fake clock that advances ``tick`` seconds each time it is read."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_a_checkpoint_is_written_by_time_before_its_step_and_resumes_like_an_uninterrupted_run(
        cache, tmp_path):
    # read once at the start, once after each step, once after each save: 100 s a read, a
    # checkpoint at least 250 s after the last -> one after step 3 (300 s), none by steps (1000)
    cfg = _kd(steps=6, checkpoint_every=1000, checkpoint_every_s=250.0)
    whole = Trainer(cache, str(tmp_path / "whole"), cfg)
    whole.clock = _Clock(100.0)
    whole.run(progress=False)
    assert sorted(p.name for p in (tmp_path / "whole/checkpoints").glob("step_*")) == \
        ["step_000003", "step_000006"]
    killed = Trainer(cache, str(tmp_path / "killed"), cfg)
    killed.clock = _Clock(100.0)
    killed.run(progress=False, stop_after=5)  # "killed" at step 5: minutes lost, not 1000 steps
    resumed = Trainer(cache, str(tmp_path / "killed"), cfg)
    assert resumed.position == 3
    resumed.run(progress=False)
    a = whole.model.state_dict()
    b = Trainer(cache, str(tmp_path / "killed"), cfg).model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    # a real clock with the default cadence (300 s) adds nothing to a run of seconds
    Trainer(cache, str(tmp_path / "plain"), _kd(steps=3, checkpoint_every=1000)).run(progress=False)
    assert [p.name for p in (tmp_path / "plain/checkpoints").glob("step_*")] == ["step_000003"]
