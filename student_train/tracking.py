"""Where a training run's metrics go besides metrics.jsonl: the experiment trackers (both stages).

``[train] trackers`` (and ``[train_ar]``) names them: ``"tensorboard"`` (the default, as
before: ``<out>/tensorboard`` for a local ``--out``), ``"mlflow"`` and ``"wandb"``. Each gets
the rows metrics.jsonl gets, at the same steps (their numeric values), from rank 0 only; MLflow
and W&B also get the run's parameters (the resolved config, seed included, the student
architecture and the cache it trains on). A tracker is a registered class (``register_tracker``),
so the config's choices and its "not installed" refusal come from this one table.

Resuming (by hand, by ``s2dit run`` or by Ray Train) continues the same MLflow and W&B run: their
ids are kept in ``<out>/trackers.json``. Where they write follows each library's own settings:

- MLflow: ``MLFLOW_TRACKING_URI`` (a server, ``file://...``, ...); unset, a file store under
  ``<out>/mlruns`` (local ``--out`` only); experiment ``MLFLOW_EXPERIMENT_NAME`` or "s2dit".
  Parameters are logged once (a resumed run adds new keys only: MLflow refuses a changed
  parameter); the resolved config of every start is the artifact ``config.json``.
- W&B: offline unless ``WANDB_MODE`` says otherwise (``wandb sync`` uploads later), files under
  ``<out>`` for a local ``--out`` (else ``WANDB_DIR``), project ``WANDB_PROJECT`` or "s2dit".

These settings reach Ray Train workers (``forwarded_env``); secrets (API keys, tokens) are not
forwarded: a worker reads those from its own environment.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import fsspec

from cache_schema.typed_config import ConfigError

IDS = "trackers.json"  # <out>/trackers.json: {tracker: its run id}, for resuming the same run


@dataclass(frozen=True)
class RunInfo:
    """What a tracker knows of the run it logs."""

    out_url: str
    root: str  # out_url's path on its filesystem
    local: bool  # out_url is a local folder
    name: str  # the run's display name (the --out folder's name)
    params: dict[str, str]  # flat: the resolved config and what the run trains on
    config: dict[str, Any]  # the same, nested (an artifact where the tracker keeps one)
    run_id: str | None  # this tracker's run to continue (from trackers.json), if any


class Tracker(Protocol):
    run_id: str | None  # what trackers.json keeps (None: nothing to continue)

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self, failed: bool) -> None: ...


@dataclass(frozen=True)
class TrackerSpec:
    name: str
    module: str  # the top-level import it needs (looked up without importing it)
    install: str  # what to pip install when it is missing
    open: Callable[[RunInfo], Tracker | None]  # None: nothing to write for this run


TRACKERS: dict[str, TrackerSpec] = {}


def register_tracker(spec: TrackerSpec) -> None:
    TRACKERS[spec.name] = spec


def check_trackers(names: tuple[str, ...], table: str) -> None:
    """Refuse a repeated tracker, or one whose library is not installed (config-check time)."""
    if len(set(names)) != len(names):
        raise ConfigError(f"[{table}] trackers = {list(names)}: a tracker is named twice")
    for name in names:
        spec = TRACKERS[name]  # the config's one_of limit has checked the names
        if importlib.util.find_spec(spec.module) is None:
            raise ConfigError(f"[{table}] trackers: {name!r} needs the {spec.module} package, "
                              f"which is not installed: pip install {spec.install}")


class Trackers:
    """The run's open trackers: rank 0 logs each metrics row to all of them."""

    def __init__(self, names: tuple[str, ...], info: RunInfo, fs: fsspec.AbstractFileSystem):
        self.fs, self.path = fs, f"{info.root}/{IDS}"
        ids = json.loads(fs.cat_file(self.path)) if fs.isfile(self.path) else {}
        self.open: dict[str, Tracker] = {}
        try:
            for name in names:
                tracker = TRACKERS[name].open(_with_id(info, ids.get(name)))
                if tracker is not None:
                    self.open[name] = tracker
        except BaseException:
            self.close(failed=True)
            raise
        kept = {**ids, **{n: t.run_id for n, t in self.open.items() if t.run_id}}
        if kept != ids:
            fs.pipe_file(self.path, json.dumps(kept, indent=1).encode())

    def log(self, row: Mapping[str, Any], step: int) -> None:
        """The numeric values of a metrics.jsonl row (as TensorBoard always took them)."""
        metrics = {k: v for k, v in row.items() if isinstance(v, (int, float))}
        for tracker in self.open.values():
            tracker.log(metrics, step)

    def close(self, failed: bool = False) -> None:
        for tracker in self.open.values():
            tracker.close(failed)
        self.open = {}


def _with_id(info: RunInfo, run_id: str | None) -> RunInfo:
    return RunInfo(**{**info.__dict__, "run_id": run_id})


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"model": {"dim": 64}}`` -> ``{"model.dim": "64"}`` (trackers' parameters are flat)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(flat_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return out


# Non-secret settings of the trackers that Ray Train workers get from the driver
FORWARDED_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_ALLOW_FILE_STORE",
                 "WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_DIR")


def forwarded_env() -> dict[str, str]:
    return {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}


# -- the trackers ------------------------------------------------------------------------------
class TensorBoard:
    run_id = None

    def __init__(self, root: str):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(f"{root}/tensorboard")

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def close(self, failed: bool) -> None:
        self.writer.close()


def _tensorboard(info: RunInfo) -> Tracker | None:
    # TensorBoard's writer needs a local path; metrics.jsonl is written everywhere
    return TensorBoard(info.root) if info.local else None


class MLflow:
    def __init__(self, info: RunInfo):
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(_mlflow_uri(info))
        self.run_id = info.run_id
        try:
            known = self.client.get_run(self.run_id).data.params if self.run_id else None
        except MlflowException:  # another tracking store than the run's first start: a new run
            known = None
        if known is None:
            self.run_id = self.client.create_run(_mlflow_experiment(self.client),
                                                 run_name=info.name).info.run_id
            known = {}
        else:
            self.client.update_run(self.run_id, status="RUNNING")
        new = [Param(k, v) for k, v in info.params.items() if k not in known]
        self.client.log_batch(self.run_id, params=new)
        self.client.log_dict(self.run_id, info.config, "config.json")

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step)
                                                    for k, v in metrics.items()])

    def close(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


def _mlflow_uri(info: RunInfo) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    if not info.local:
        raise ValueError(f"trackers: mlflow has no tracking store for a remote --out "
                         f"({info.out_url}): set MLFLOW_TRACKING_URI (a server or a file:// folder)")
    # MLflow 3 refuses its file store unless opted in; this default is that store, on purpose
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return f"file://{os.path.abspath(info.root)}/mlruns"


def _mlflow_experiment(client: Any) -> str:
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "s2dit")
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


class WandB:
    def __init__(self, info: RunInfo):
        import wandb

        where = {"dir": info.root} if info.local and "WANDB_DIR" not in os.environ else {}
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "s2dit"), name=info.name,
                              id=info.run_id, resume="allow",
                              mode=os.environ.get("WANDB_MODE", "offline"), **where)
        self.run.config.update(info.config, allow_val_change=True)
        self.run_id = self.run.id

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


register_tracker(TrackerSpec("tensorboard", "tensorboard", "tensorboard", _tensorboard))
register_tracker(TrackerSpec("mlflow", "mlflow", "mlflow-skinny (or 's2dit[tracking]')", MLflow))
register_tracker(TrackerSpec("wandb", "wandb", "wandb", WandB))
