"""The teacher actor: loads the teacher once, turns work units into committed-ready shards.

Actors run with ``max_concurrency=2``: while one unit's shard uploads (I/O, GIL released) the
next unit computes, so writing overlaps the teacher.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from itertools import groupby
from typing import Any

from cache_schema import StoreError, write_shard
from cache_schema.store import apply_storage_env

from .config import JobConfig
from .sampler import record_trajectories
from .units import Unit


class TeacherWorker:
    """Plain class (usable without Ray); ``ray.remote`` wraps it in job.py."""

    def __init__(self, config: JobConfig, fingerprint: dict[str, Any], fingerprint_digest: str,
                 storage: dict[str, str] | None = None):
        started = time.perf_counter()
        self.config = config
        self.load_error: str | None = None
        try:  # the driver's storage_env(): endpoint, region, profile name, file paths; no secrets
            apply_storage_env(storage)
        except StoreError as exc:  # e.g. the profiles file is missing on this node
            self.load_error = str(exc)
        # Heavy setup here, where the GPU is: load the teacher, then prove it is the one the
        # driver fingerprinted (weight files, configs, library versions).
        self.teacher = config.teacher.build(config.video, device=config.device)
        try:
            config.teacher.check_loaded(self.teacher, fingerprint)
        except ValueError as exc:  # every unit of this actor fails with the reason
            self.load_error = self.load_error or str(exc)
        self.digest = fingerprint_digest
        self.layout = dataclasses.replace(self.teacher.layout(config.keep_step_indices,
                                                              config.half_dtype), codec=config.codec)
        self.load_seconds = time.perf_counter() - started
        self.device_name = _device_name(config.device)
        # Two units run at once so uploads overlap compute, but teachers carry solver state
        # (diffusers schedulers count steps): one unit computes at a time.
        self._compute = threading.Lock()

    def run_unit(self, unit: Unit) -> dict[str, Any]:
        cfg = self.config
        if self.load_error:
            raise ValueError(f"unit {unit.name} not produced: {self.load_error}")
        t0 = time.perf_counter()
        records, rejections = [], []
        with self._compute:
            self._record(unit, records, rejections)
        t1 = time.perf_counter()
        shard = None
        if records:
            shard = write_shard(cfg.output, records, layout=self.layout, encoding=cfg.encoding,
                                shard_name=unit.name)
        t2 = time.perf_counter()
        return {"unit": unit.name, "shard": shard, "rejections": rejections,
                "samples": len(records), "teacher_seconds": t1 - t0, "write_seconds": t2 - t1,
                "bytes": shard.bytes if shard else 0, "device": self.device_name}

    def _record(self, unit: Unit, records: list, rejections: list) -> None:
        cfg = self.config
        by_negative = groupby(unit.entries, key=lambda e: e.negative_prompt or cfg.negative_prompt)
        for negative, group in by_negative:
            group = list(group)
            recs, rej = record_trajectories(
                self.teacher, [e.prompt for e in group], [e.seed for e in group],
                global_seed=cfg.seed, keep_steps=cfg.keep_step_indices, negative_prompt=negative,
                half_dtype=cfg.half_dtype, fingerprint_digest=self.digest,
                micro_batch=cfg.teacher.micro_batch)
            records += recs
            rejections += [{"line": group[r.index].line, "text": r.prompt, "reason": r.reason}
                           for r in rej]


def _device_name(device: str) -> str:
    """The hardware a unit ran on, for the job report: bf16 kernels differ between GPU models
    (and CPUs), so a mixed pool makes bytes depend on where a unit ran (one product per job)."""
    import platform

    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu {platform.machine()} ({platform.processor() or 'unknown'})"
