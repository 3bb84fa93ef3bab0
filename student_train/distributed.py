"""Multi-worker training on Ray Train (gloo on CPU, NCCL on GPU), any registered stage.

Every worker builds the same stage's trainer with its rank: the loader takes every world-th
sample of the shared epoch order, the per-rank batch is ``batch_size / workers`` (so the global
batch is the configured one), gradients are averaged over ranks, and rank 0 alone writes
checkpoints and metrics. A stage whose spec says ``ddp`` gets its model wrapped in DDP; the
others average their gradients themselves (stage 2 rolls out chunk by chunk through
``forward_chunk``/``commit_chunk``, which a DDP wrapper does not proxy; see collective.py).
Locally ``ray.init()`` starts an embedded cluster; on a cluster the same code runs under
``ray job submit``. Callers use ``launch`` (launch.py), which comes here for workers > 1.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import fsspec
import torch

from cache_schema.store import absolute_url, apply_storage_env, storage_env

from .checkpoint import latest_checkpoint
from .config import StageConfig
from .stage_spec import TrainingStage
from .tracking import forwarded_env


def rank_device(configured: str, assigned: torch.device | None) -> str:
    """The device a rank trains on: the GPU Ray Train assigned it when the config asks for
    CUDA (every rank its own, not all on cuda:0), else the configured device."""
    if torch.device(configured).type == "cuda" and assigned is not None:
        return str(assigned)
    return configured


def _worker_loop(stage: TrainingStage, params: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    assigned = ray.train.torch.get_device() if params["use_gpu"] else None
    params["config"]["device"] = rank_device(params["config"]["device"], assigned)
    wrap = {"wrap_model": ray.train.torch.prepare_model} if stage.ddp else {}
    trainer = stage.build(stage.config(**params["config"]), params["out_url"], rank=rank,
                          world_size=world, **wrap, **params["inputs"])
    trainer.run(progress=rank == 0 and params["progress"])


def connect_ray() -> Any:
    """Ray, for the stages that run on it: the cluster under `ray job submit` (or an address
    already initialised), else a local runtime started here."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(include_dashboard=False, log_to_driver=False)
    return ray


def fit_on_ray(stage: TrainingStage, config: StageConfig, out_url: str, inputs: dict[str, str], *,
               workers: int, max_failures: int = 0, progress: bool = True,
               storage_path: str | None = None) -> str | None:
    """Train ``stage`` on ``workers`` Ray Train workers; the newest checkpoint under ``out_url``.

    A config on CUDA gets one GPU per worker. ``max_failures``: how often Ray Train may restart
    the worker group after a worker or node dies; each restart resumes from the newest
    checkpoint under ``out_url``, so the run ends as an uninterrupted one would."""
    if config.batch_size % workers:
        raise ValueError(f"batch_size {config.batch_size} must divide evenly over {workers} workers")
    if max_failures < 0:
        raise ValueError(f"max_failures must be >= 0, got {max_failures}")
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    connect_ray()
    # Ray Train runs each worker in its trial folder: local paths must be absolute here
    out_url, inputs = absolute_url(out_url), {k: absolute_url(v) for k, v in inputs.items()}
    config = config.with_absolute_paths()
    use_gpu = torch.device(config.device).type == "cuda"
    params = {"config": config.to_json(), "out_url": out_url, "use_gpu": use_gpu,
              "inputs": inputs, "progress": progress}
    storage = absolute_url(storage_path) if storage_path else \
        os.path.join(out_url if "://" not in out_url else "/tmp", "ray_train")
    # Workers get the storage settings in the loop function's closure, not in its config (Ray
    # records the config) nor in runtime_env (Ray logs it); non-secret names only. The stage
    # spec travels the same way (its classes and functions by reference).
    worker_env, tracker_env = storage_env(), forwarded_env()

    def train_loop(config: dict[str, Any]) -> None:
        apply_storage_env(worker_env)
        os.environ.update(tracker_env)  # where rank 0's trackers write (no secrets)
        _worker_loop(stage, config)

    trainer = TorchTrainer(train_loop, train_loop_config=params,
                           scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
                           run_config=RunConfig(storage_path=storage,
                                                failure_config=FailureConfig(max_failures=max_failures)))
    with _removed_if_refused(out_url, storage):
        trainer.fit()
    return latest_checkpoint(out_url)


@contextlib.contextmanager
def _removed_if_refused(out_url: str, storage: str) -> Iterator[None]:
    """A run its workers refuse before training (a config that does not fit the cache, a
    fingerprint mismatch) leaves no ``out_url`` behind, as an in-process one does: Ray Train
    creates its storage folder (by default inside ``out_url``) before any worker checks
    anything. Removed only when this call created ``out_url`` and nothing but that storage
    is in it (a rank that started training wrote its metrics there: kept)."""
    fs, root = fsspec.core.url_to_fs(out_url)
    root = root.rstrip("/")
    created = not fs.exists(root)
    try:
        yield
    except BaseException:
        if created:
            _remove_untrained(fs, root, storage)
        raise


def _remove_untrained(fs: fsspec.AbstractFileSystem, root: str, storage: str) -> None:
    own = fsspec.core.url_to_fs(storage)[1].rstrip("/")
    allowed = {own[len(root) + 1:].split("/", 1)[0]} if own.startswith(root + "/") else set()
    with contextlib.suppress(OSError):  # best effort: the workers' error is what matters
        fs.invalidate_cache(root)
        if fs.exists(root) and {p.rstrip("/").rsplit("/", 1)[-1]
                                for p in fs.ls(root, detail=False)} <= allowed:
            fs.rm(root, recursive=True)
