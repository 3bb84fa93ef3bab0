"""Train any registered stage, in this process or on Ray Train workers, through one call.

    launch("kd", config, workers, out_url=..., cache_url=...)
    launch("ar", config, workers, out_url=..., init_url=..., cache_url=...)

One worker trains here (and reports its resume point and timings); more run on Ray Train
(distributed.py). Either way an interrupted run resumes from the newest checkpoint under
``out_url``. Callers never choose between the two themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cache_schema.store import absolute_url

from .checkpoint import latest_checkpoint
from .config import StageConfig
from .device import check_device
from .stage_spec import TrainingStage
from .stages import get_stage


@dataclass(kw_only=True, slots=True)
class Launched:
    """What a training call did. Timings and the resume point are known in process only."""

    stage: TrainingStage
    checkpoint: str | None  # the newest checkpoint (a finished run's own when nothing was left)
    workers: int
    resumed_from: str | None = None
    train_seconds: float | None = None
    phase_seconds: dict[str, float] = field(default_factory=dict)
    phase_steps: dict[str, int] = field(default_factory=dict)


def launch(stage: str | TrainingStage, config: StageConfig, workers: int = 1, *, out_url: str,
           progress: bool = True, max_failures: int = 0, storage_path: str | None = None,
           log: Callable[[str], None] | None = None, **inputs: str) -> Launched:
    """Train (or resume) ``stage`` (a registered name or a spec) with ``config`` into
    ``out_url``, from its ``inputs`` (the URLs its spec names, e.g. ``cache_url``).

    ``max_failures`` and ``storage_path`` concern Ray Train (workers > 1); ``log`` gets a line
    when an in-process run resumes."""
    spec = get_stage(stage) if isinstance(stage, str) else stage
    if not isinstance(config, spec.config):
        raise TypeError(f"training stage {spec.name!r} takes a {spec.config.__name__}, got "
                        f"{type(config).__name__}")
    if set(inputs) != set(spec.inputs):
        raise TypeError(f"training stage {spec.name!r} trains from {list(spec.inputs)}, got "
                        f"{sorted(inputs)}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    # local paths absolute: checkpoints record the cache URL, and Ray Train workers do not run
    # in the driver's working directory
    out_url, inputs = absolute_url(out_url), {k: absolute_url(v) for k, v in inputs.items()}
    config = config.with_absolute_paths()
    if workers > 1:
        from .distributed import fit_on_ray

        checkpoint = fit_on_ray(spec, config, out_url, inputs, workers=workers,
                                max_failures=max_failures, progress=progress,
                                storage_path=storage_path)
        return Launched(stage=spec, checkpoint=checkpoint, workers=workers)
    # here, not on Ray Train workers: their GPUs are theirs, the driver may have none
    check_device(config.device, f"[{spec.config.TABLE}] device (--device)")
    trainer = spec.build(config, out_url, **inputs)
    if trainer.resumed_from and log is not None:
        log(f"resuming from {trainer.resumed_from} (step {trainer.position} of "
            f"{spec.total_steps(config)})")
    # a finished run trains nothing: its newest checkpoint is still the answer
    checkpoint = trainer.run(progress=progress) or latest_checkpoint(out_url)
    return Launched(stage=spec, checkpoint=checkpoint, workers=1,
                    resumed_from=trainer.resumed_from,
                    train_seconds=round(trainer.train_seconds, 3),
                    phase_seconds={k: round(v, 3) for k, v in trainer.phase_seconds.items()},
                    phase_steps={p.name: p.done() for p in trainer.phases()})
