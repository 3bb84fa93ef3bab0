"""Multi-worker training on Ray Train (gloo on CPU, NCCL on GPU), stage 1 and stage 2.

Every worker runs the same trainer with its rank: the loader takes every world-th sample of the
shared epoch order, the per-rank batch is ``batch_size / workers`` (so the global batch is the
configured one), gradients are averaged over ranks, and rank 0 alone writes checkpoints and
metrics. Stage 1 (S2DiT-KD) wraps the model in DDP. Stage 2 (S2DiT-AR) rolls out chunk by chunk
through ``forward_chunk``/``commit_chunk``, which a DDP wrapper does not proxy, so its trainer
averages the generator's and the critic's gradients itself (collective.py). Locally
``ray.init()`` starts an embedded cluster; on a cluster the same code runs under
``ray job submit``.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from cache_schema.store import apply_storage_env, storage_env

from .config import TrainConfig


def rank_device(configured: str, assigned: torch.device | None) -> str:
    """The device a rank trains on: the GPU Ray Train assigned it when the config asks for
    CUDA (every rank its own, not all on cuda:0), else the configured device."""
    if torch.device(configured).type == "cuda" and assigned is not None:
        return str(assigned)
    return configured


def _worker_loop(params: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    assigned = ray.train.torch.get_device() if params["use_gpu"] else None
    params["config"]["device"] = rank_device(params["config"]["device"], assigned)
    if params["stage"] == "kd":
        from .trainer import Trainer

        trainer = Trainer(params["cache_url"], params["out_url"], TrainConfig(**params["config"]),
                          rank=rank, world_size=world, wrap_model=ray.train.torch.prepare_model)
    else:
        from .self_forcing import ARConfig, ARTrainer

        trainer = ARTrainer(params["init_url"], params["cache_url"], params["out_url"],
                            ARConfig(**params["config"]), rank=rank, world_size=world)
    trainer.run(progress=rank == 0 and params["progress"])


def _absolute(url: str) -> str:
    return os.path.abspath(url) if "://" not in url else url


def train_kd_ray(cache_url: str, out_url: str, config: TrainConfig, *, workers: int = 2,
                 max_failures: int = 0, progress: bool = True,
                 storage_path: str | None = None) -> str | None:
    """Run stage 1 on ``workers`` Ray Train workers; returns the final checkpoint URL.

    A config on CUDA gets one GPU per worker. ``max_failures``: how often Ray Train may restart
    the worker group after a worker or node dies; each restart resumes from the newest
    checkpoint under ``out_url``, so the run ends as an uninterrupted one would."""
    params = {"stage": "kd", "cache_url": cache_url, "out_url": _absolute(out_url),
              "config": config.to_json(), "progress": progress}
    return _fit(params, config.batch_size, workers, config.device, max_failures, storage_path)


def train_ar_ray(init_url: str, cache_url: str, out_url: str, config: Any, *, workers: int = 2,
                 max_failures: int = 0, progress: bool = True,
                 storage_path: str | None = None) -> str | None:
    """Run stage 2 (an ``ARConfig``) on ``workers`` Ray Train workers, as ``train_kd_ray``."""
    params = {"stage": "ar", "init_url": _absolute(init_url), "cache_url": cache_url,
              "out_url": _absolute(out_url), "config": config.to_json(), "progress": progress}
    return _fit(params, config.batch_size, workers, config.device, max_failures, storage_path)


def _fit(params: dict[str, Any], batch_size: int, workers: int, device: str, max_failures: int,
         storage_path: str | None) -> str | None:
    if batch_size % workers:
        raise ValueError(f"batch_size {batch_size} must divide evenly over {workers} workers")
    if max_failures < 0:
        raise ValueError(f"max_failures must be >= 0, got {max_failures}")
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from .checkpoint import latest_checkpoint

    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(include_dashboard=False, log_to_driver=False)
    params["use_gpu"] = torch.device(device).type == "cuda"
    storage = storage_path or os.path.join(
        params["out_url"] if "://" not in params["out_url"] else "/tmp", "ray_train")
    # Workers get the storage settings in the loop function's closure, not in its config (Ray
    # records the config) nor in runtime_env (Ray logs it); non-secret names only.
    worker_env = storage_env()

    def train_loop(config: dict[str, Any]) -> None:
        apply_storage_env(worker_env)
        _worker_loop(config)

    trainer = TorchTrainer(train_loop, train_loop_config=params,
                           scaling_config=ScalingConfig(num_workers=workers,
                                                        use_gpu=params["use_gpu"]),
                           run_config=RunConfig(storage_path=storage,
                                                failure_config=FailureConfig(max_failures=max_failures)))
    trainer.fit()
    return latest_checkpoint(params["out_url"])
