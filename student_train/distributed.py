"""Multi-worker S2DiT-KD on Ray Train (DDP; gloo on CPU, NCCL on GPU).

Every worker runs the same ``Trainer`` with its rank: the loader takes every world-th sample
of the shared epoch order, the per-rank batch is ``batch_size / workers`` (so the global batch
is the configured one), DDP averages gradients, and rank 0 alone writes checkpoints and
metrics. Locally ``ray.init()`` starts an embedded cluster; on a cluster the same code runs
under ``ray job submit``.
"""

from __future__ import annotations

import os
from typing import Any

from .config import TrainConfig


def _worker_loop(params: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    from .trainer import Trainer

    trainer = Trainer(params["cache_url"], params["out_url"], TrainConfig(**params["config"]),
                      rank=rank, world_size=world, wrap_model=ray.train.torch.prepare_model)
    trainer.run(progress=rank == 0 and params["progress"])


def train_kd_ray(cache_url: str, out_url: str, config: TrainConfig, *, workers: int = 2,
                 use_gpu: bool = False, progress: bool = True, storage_path: str | None = None) -> str | None:
    """Run stage 1 on ``workers`` Ray Train workers; returns the final checkpoint URL."""
    if config.batch_size % workers:
        raise ValueError(f"batch_size {config.batch_size} must divide evenly over {workers} workers")
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from .checkpoint import latest_checkpoint

    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(include_dashboard=False, log_to_driver=False)
    params = {"cache_url": cache_url, "out_url": os.path.abspath(out_url) if "://" not in out_url else out_url,
              "config": {**config.to_json(), "betas": tuple(config.betas)}, "progress": progress}
    trainer = TorchTrainer(_worker_loop, train_loop_config=params,
                           scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
                           run_config=RunConfig(storage_path=storage_path or os.path.join(
                               params["out_url"] if "://" not in params["out_url"] else "/tmp", "ray_train")))
    trainer.fit()
    return latest_checkpoint(params["out_url"])
