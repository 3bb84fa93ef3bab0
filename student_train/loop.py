"""The one training loop of every stage: cache, resume, step, log, checkpoint, progress.

A stage (stage 1's ``Trainer``: KD; stage 2's ``ARTrainer``: causal, then DMD) subclasses
``TrainLoop`` and supplies only what is its own:

- ``phases()``: its phases in order, each a name, a step count, the steps done and a function
  that runs one optimiser step (given ``take(n)``, the next n records of this rank) and returns
  that step's metrics;
- ``restore(tensors, state)``: its models, optimisers and counters from a checkpoint;
- ``checkpoint_stage()`` and ``checkpoint_parts()``: what a checkpoint of it holds.

The loop owns the rest, the same for every stage: the cache stream and the manifest it records,
the resume checks (same stage, same cache), one record stream shared by all phases, metrics
(metrics.jsonl with the phase of every row; the same rows to the configured trackers,
student_train.tracking: TensorBoard, MLflow, W&B), the progress bar, checkpoints every
``checkpoint_every`` steps, at the first step ``checkpoint_every_s`` seconds after the last one
(an interruption loses minutes), at a phase's end and at the end (numbered by the steps of all
phases), ``stop_after`` (a "killed" run, for tests), ``phase_seconds`` and ``train_seconds``.
Under Ray Train every rank runs the same loop; rank 0 alone writes.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import fsspec
import torch
from tqdm import tqdm

from .checkpoint import checkpoint_stage, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import StageConfig
from .data import CacheStream, LoaderConfig
from .tracking import RunInfo, Trackers, flat_params

Take = Callable[[int], list[dict]]  # the next n records of this rank, in loader order


@dataclass
class Phase:
    name: str  # the ``phase`` of its metrics rows ("kd", "causal", "dmd")
    steps: int  # optimiser steps of this phase in a whole run
    done: Callable[[], int]  # steps of it already done
    step: Callable[[Take], dict[str, Any]]  # one optimiser step -> its metrics
    rows: int  # global batch per step (samples/s)


# what a refused resume tells the user
RESUME_FIX = ("resume with the model config it was trained with (model_config in its "
              "state.json) or train into a new --out")


@dataclass
class Parts:
    """What a checkpoint holds besides the loop's own state (see save_checkpoint)."""

    model: torch.nn.Module
    ema: torch.nn.Module
    optimizer: torch.optim.Optimizer
    state: dict[str, Any]  # JSON
    modules: dict[str, torch.nn.Module] | None = None
    optimizers: dict[str, torch.optim.Optimizer] | None = None


class TrainLoop:
    DESC: ClassVar[str] = ""  # progress bar label
    RESUMES: ClassVar[tuple[str, ...]] = ()  # checkpoint stages this stage continues
    PROGRESS_KEYS: ClassVar[tuple[str, ...]] = ()  # metrics shown on the progress bar
    # the clock of the time-based checkpoint cadence (a test sets a fake one)
    clock: Callable[[], float] = staticmethod(time.monotonic)

    cfg: StageConfig
    stream: CacheStream
    model_config: Any
    plan: Any

    def __init__(self, out_url: str, config: StageConfig, *, rank: int, world_size: int):
        if config.batch_size % world_size:
            raise ValueError(f"batch_size {config.batch_size} must divide evenly over "
                             f"{world_size} workers")
        self.cfg, self.out_url, self.rank, self.world = config, out_url.rstrip("/"), rank, world_size
        self.device = torch.device(config.device)
        self.resumed_from: str | None = None
        self.phase_seconds: dict[str, float] = {}
        self.train_seconds = 0.0

    # -- the stage's part --------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        raise NotImplementedError

    def restore(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        raise NotImplementedError

    def checkpoint_stage(self) -> str:
        raise NotImplementedError

    def checkpoint_parts(self) -> Parts:
        raise NotImplementedError

    def plan_json(self) -> dict[str, Any]:
        return self.plan

    # -- cache and resume --------------------------------------------------------------------
    def open_cache(self, cache_url: str, fields: Sequence[str] | Callable[[Any], Sequence[str]]):
        """The stream of this rank, its layout and the manifest every checkpoint records.
        ``fields`` may be a function of the manifest (a stage that reads optional fields when
        the cache holds them)."""
        self.stream = CacheStream(cache_url, fields=() if callable(fields) else fields,
                                  config=LoaderConfig.for_training(self.cfg, self.rank, self.world))
        manifest = self.stream.reader.manifest
        if callable(fields):  # before the first read
            self.stream.fields = tuple(fields(manifest))
        self.layout = manifest.layout
        self.manifest_info = {"cache_url": cache_url, "cache_id": manifest.cache_id,
                              "generation": manifest.generation,
                              "fingerprint_digest": manifest.fingerprint_digest}
        return manifest

    def resume(self) -> None:
        """Continue from the newest checkpoint under the output URL, if any: the same stage on
        the same cache, or a clear refusal."""
        latest = self.resumed_from = latest_checkpoint(self.out_url)
        if not latest:
            return

        def expect(state: dict[str, Any]) -> dict[str, torch.nn.Module]:
            stage = checkpoint_stage(state)
            if stage not in self.RESUMES:
                raise ValueError(f"{self.out_url} holds a run of stage {stage!r} ({latest}); this "
                                 f"is stage {'/'.join(self.RESUMES)}: use a new --out")
            if state["manifest"]["cache_id"] != self.manifest_info["cache_id"]:
                raise ValueError(f"{self.out_url} holds a run on cache "
                                 f"{state['manifest']['cache_id']}; use a new --out for another cache")
            parts = self.checkpoint_parts()
            return {"model": parts.model, "ema": parts.ema, **(parts.modules or {})}

        # checked against this config's modules before any is touched: a run resumed under
        # another [train.model] is one line naming the first tensor that differs
        tensors, state = load_checkpoint(latest, expect, fix=RESUME_FIX)
        self.restore(tensors, state)
        loader = state["loader"]
        self.stream.load_state_dict(loader[str(self.rank)] if "0" in loader else loader)

    # -- steps, logs, checkpoints ------------------------------------------------------------
    @property
    def position(self) -> int:
        """Optimiser steps done over all phases (checkpoints are numbered by it)."""
        return sum(p.done() for p in self.phases())

    def take_records(self) -> Take:
        """One record stream for all phases: take(n) -> the next n records, in loader order,
        each with the loader's ``_epoch`` (the key of its per-row draws)."""
        it = iter(self.stream)

        def take(count: int) -> list[dict]:
            records = []
            for _ in range(count):
                record = next(it)
                record["_epoch"] = self.stream.epoch
                records.append(record)
            return records
        return take

    def checkpoint(self) -> str:
        parts = self.checkpoint_parts()
        extra = {"stage": self.checkpoint_stage(), "config": self.cfg.to_json(),
                 "model_config": self.model_config.to_json(), "manifest": self.manifest_info,
                 "plan": self.plan_json(), "loader": self.stream.state_dict(), **parts.state}
        return save_checkpoint(self.out_url, self.position, model=parts.model, ema=parts.ema,
                               optimizer=parts.optimizer, extra=extra, modules=parts.modules,
                               optimizers=parts.optimizers)

    def tracking_info(self, root: str) -> RunInfo:
        """What the run's trackers log as its parameters: the resolved config (seed included),
        the student architecture, the stage, the workers and the cache it trains on."""
        config = {"stage": self.checkpoint_stage(), "config": self.cfg.to_json(),
                  "model_config": self.model_config.to_json(), "manifest": self.manifest_info,
                  "world_size": self.world}
        local = "://" not in self.out_url or self.out_url.startswith("file://")
        return RunInfo(out_url=self.out_url, root=root, local=local,
                       name=self.out_url.rsplit("/", 1)[-1], params=flat_params(config),
                       config=config, run_id=None)

    def run(self, *, progress: bool = True, stop_after: int | None = None) -> str | None:
        """Train to the end of the last phase (or ``stop_after`` steps); the newest checkpoint
        this call wrote (None if it had nothing left to do)."""
        main = self.rank == 0
        fs, root = fsspec.core.url_to_fs(self.out_url)
        fs.makedirs(root, exist_ok=True)
        trackers = Trackers(self.cfg.trackers, self.tracking_info(root), fs) if main else None
        try:
            with fs.open(f"{root}/metrics.jsonl", "a") if main else contextlib.nullcontext() as log:
                last_ckpt = self._train(log, trackers, progress, stop_after)
        except BaseException:
            if trackers is not None:
                trackers.close(failed=True)
            raise
        if trackers is not None:
            trackers.close()
        return last_ckpt

    def _train(self, log: Any, trackers: Trackers | None, progress: bool,
               stop_after: int | None) -> str | None:
        """The steps of every phase; rank 0 (``log`` and ``trackers`` given) logs and saves."""
        cfg, main = self.cfg, self.rank == 0
        phases = self.phases()
        bar = tqdm(total=sum(p.steps for p in phases), initial=self.position, desc=self.DESC,
                   disable=not (progress and main))
        take = self.take_records()
        started, ran, last_ckpt = time.perf_counter(), 0, None
        saved_at = self.clock()  # (or resumed from) a checkpoint, as far as the cadence goes
        self.phase_seconds = {p.name: 0.0 for p in phases}
        if log and self.resumed_from:  # a restart (by hand or by Ray Train) shows
            log.write(json.dumps({"step": self.position, "event": "resumed",
                                  "checkpoint": self.resumed_from}) + "\n")
        for phase in phases:
            while phase.done() < phase.steps and (stop_after is None or ran < stop_after):
                wait0, t0 = self.stream.wait_seconds, time.perf_counter()
                row = phase.step(take)
                seconds = time.perf_counter() - t0
                self.phase_seconds[phase.name] += seconds
                ran += 1
                bar.update(1)
                done, phase_end = self.position, phase.done() == phase.steps
                if main and (done % cfg.log_every == 0 or phase_end):
                    # losses are rank 0's share of the global batch
                    row = {"step": done, "phase": phase.name, **row, "step_seconds": seconds,
                           "samples_per_s": phase.rows / max(seconds, 1e-9),
                           "loader_wait_s": self.stream.wait_seconds - wait0,
                           "loader_bytes_per_sample": self.stream.bytes_per_sample,
                           "skipped_shards": len(self.stream.skipped_shards)}
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    trackers.log(row, done)
                    bar.set_postfix({k: f"{row[k]:.4f}" for k in self.PROGRESS_KEYS if k in row})
                # rank 0 alone decides and writes (a checkpoint involves no other rank)
                by_time = cfg.checkpoint_every_s > 0 and \
                    self.clock() - saved_at >= cfg.checkpoint_every_s
                if main and (done % cfg.checkpoint_every == 0 or phase_end or by_time):
                    last_ckpt = self.checkpoint()
                    saved_at = self.clock()
        bar.close()
        self.train_seconds = time.perf_counter() - started
        return last_ckpt
