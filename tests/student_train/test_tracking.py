"""Experiment tracking from the loop's one metric stream (issue 29, student_train/tracking.py):
``[train] trackers``. The default is as before (TensorBoard; the recorded config's bytes
unchanged); a tracker that is not installed is refused when the config is checked, naming what
to pip install; MLflow (the real library, mlflow-skinny of the ``tracking`` extra, on a local
file store) gets the resolved config as parameters and every metrics.jsonl row per step, and a
resumed run continues the same MLflow run; only rank 0 logs. W&B runs offline (its local files)
where ``wandb`` is installed: it is not in the project's extras (a ~60 MB wheel with a service
binary), so that test skips without it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from cache_factory import make_cache

from cache_schema.typed_config import ConfigError
from student_train import tracking
from student_train.config import TrainConfig
from student_train.self_forcing import ARConfig
from student_train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
HAS_WANDB = importlib.util.find_spec("wandb") is not None


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return make_cache(tmp_path_factory.mktemp("tracking") / "cache", seeds=1)


def _kd(**kw) -> TrainConfig:
    return TrainConfig(**{"steps": 2, "batch_size": 4, "checkpoint_every": 1, "log_every": 1,
                          "warmup_steps": 1, "model": {"dim": 24, "heads": 2}, **kw})


def _rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "event" not in r]


def test_the_default_is_tensorboard_and_leaves_the_recorded_config_as_it_was():
    for config in (TrainConfig(), ARConfig()):
        assert config.trackers == ("tensorboard",)
        assert "trackers" not in config.to_json()  # checkpoints and compare cells: same bytes
    assert TrainConfig(trackers=[]).to_json()["trackers"] == []
    assert TrainConfig(trackers=["tensorboard", "mlflow"]).to_json()["trackers"] == ["tensorboard", "mlflow"]
    assert TrainConfig.CONTINUES["trackers"] == "any"  # an edited run continues


def test_a_tracker_not_installed_is_refused_at_config_check_naming_the_pip_install(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec",
                        lambda name: None if name in {"mlflow", "wandb"} else real(name))
    with pytest.raises(ConfigError, match=r"^\[train\] trackers: 'mlflow' needs the mlflow package, "
                       r"which is not installed: pip install mlflow-skinny \(or 's2dit\[tracking\]'\)$"):
        TrainConfig(trackers=["tensorboard", "mlflow"])
    with pytest.raises(ConfigError, match=r"^\[train_ar\] trackers: 'wandb' .*pip install wandb$"):
        ARConfig(trackers=["wandb"])
    toml = tmp_path / "t.toml"
    toml.write_text('[train]\ntrackers = ["wandb"]\n')
    with pytest.raises(ConfigError, match="pip install wandb"):
        TrainConfig.load(str(toml))
    with pytest.raises(ConfigError, match="each one of 'tensorboard', 'mlflow', 'wandb'"):
        TrainConfig(trackers=["mlfow"])
    with pytest.raises(ConfigError, match="named twice"):
        TrainConfig(trackers=["tensorboard", "tensorboard"])


def test_no_trackers_writes_metrics_jsonl_only(cache, tmp_path):
    Trainer(cache, str(tmp_path / "a"), _kd(trackers=[])).run(progress=False)
    assert len(_rows(tmp_path / "a")) == 2
    assert not (tmp_path / "a" / "tensorboard").exists() and not (tmp_path / "a" / "trackers.json").exists()


def _mlflow_run(out: Path):
    from mlflow.tracking import MlflowClient

    run_id = json.loads((out / "trackers.json").read_text())["mlflow"]
    client = MlflowClient()  # MLFLOW_TRACKING_URI from the environment
    return client, client.get_run(run_id)


def test_mlflow_gets_the_config_as_params_and_every_row_and_a_resume_continues_its_run(
        cache, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow-skinny (s2dit[tracking]) is not installed")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "store").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    out = tmp_path / "kd"
    Trainer(cache, str(out), _kd(trackers=["mlflow"], seed=7)).run(progress=False)
    assert not (out / "tensorboard").exists() and not (out / "mlruns").exists()
    client, run = _mlflow_run(out)
    assert run.info.status == "FINISHED" and run.info.run_name == "kd"
    assert client.get_experiment(run.info.experiment_id).name == "s2dit"
    params = run.data.params
    assert params["config.seed"] == "7" and params["config.lr"] == "0.001" and params["stage"] == "kd"
    assert params["config.trackers"] == '["mlflow"]' and params["model_config.dim"] == "24"
    assert params["manifest.cache_id"] and params["world_size"] == "1"
    rows = _rows(out)
    for key in ("loss", "lr", "step_seconds", "samples_per_s"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert history == [(r["step"], pytest.approx(r[key])) for r in rows], key
    # resumed with more steps: the same MLflow run, one more step; steps logged once (MLflow
    # refuses a changed parameter), the newest resolved config in its config.json artifact
    Trainer(cache, str(out), _kd(trackers=["mlflow"], seed=7, steps=3)).run(progress=False)
    client, again = _mlflow_run(out)
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3]
    assert again.data.params["config.steps"] == "2"
    config = json.loads(Path(client.download_artifacts(run.info.run_id, "config.json", str(tmp_path))).read_text())
    assert config["config"]["steps"] == 3 and config["stage"] == "kd"


def test_mlflow_defaults_to_a_file_store_under_out_and_only_rank_0_logs(cache, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow-skinny (s2dit[tracking]) is not installed")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    # rank 1 of 2 (its own half of the batch, no gradient exchange without DDP): writes nothing
    Trainer(cache, str(tmp_path / "r1"), _kd(trackers=["tensorboard", "mlflow"]),
            rank=1, world_size=2).run(progress=False)
    assert not [p for p in (tmp_path / "r1").iterdir() if p.name != "checkpoints"]
    out = tmp_path / "r0"
    Trainer(cache, str(out), _kd(trackers=["tensorboard", "mlflow"])).run(progress=False)
    assert (out / "mlruns").is_dir() and (out / "tensorboard").is_dir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (out / "mlruns").as_uri())
    client, run = _mlflow_run(out)
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 2


def test_trackers_settings_reach_ray_train_workers_but_no_secret(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("WANDB_PROJECT", "p")
    monkeypatch.setenv("WANDB_API_KEY", "secret")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "secret")
    forwarded = tracking.forwarded_env()
    assert forwarded["MLFLOW_TRACKING_URI"] == "http://mlflow:5000" and forwarded["WANDB_PROJECT"] == "p"
    assert "secret" not in forwarded.values()


@pytest.mark.skipif(not HAS_WANDB, reason="wandb is not installed (not in the project's extras: "
                    "pip install wandb to run this test)")
def test_wandb_offline_writes_its_run_under_out_and_a_resume_continues_it(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    out = tmp_path / "kd"
    Trainer(cache, str(out), _kd(trackers=["wandb"])).run(progress=False)
    run_id = json.loads((out / "trackers.json").read_text())["wandb"]
    runs = sorted((out / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1 and (runs[0] / f"run-{run_id}.wandb").is_file()
    Trainer(cache, str(out), _kd(trackers=["wandb"], steps=3)).run(progress=False)
    assert json.loads((out / "trackers.json").read_text())["wandb"] == run_id
    assert len(sorted((out / "wandb").glob(f"offline-run-*-{run_id}"))) == 2  # one per start
