"""The teacher actor: loads the teacher once, turns work units into committed-ready shards.

Actors run with ``max_concurrency=2``: while one unit's shard uploads (I/O, GIL released) the
next unit computes, so writing overlaps the teacher.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from itertools import groupby
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import JobConfig
    from .units import Unit


class TeacherWorker:
    """Plain class (usable without Ray: construct, then ``load(...)``); ``ray.remote`` wraps it
    in pool.py. The driver sees two phases with two timeouts: placement (the constructor has
    run: a node had the resources and the process started) and loading (``load`` returned a
    checked teacher, or raised with its cause while the actor stays reachable). So the
    constructor takes nothing heavy and this module imports the teacher stack (torch, the
    teachers) only in ``load``: a placement must not wait for it.
    """

    def __init__(self, progress: Any = None):
        self.progress = progress  # a ProgressBoard actor handle, or None
        self.teacher = None
        self.load_seconds = 0.0
        self.device_name = ""
        # Two units run at once so uploads overlap compute, but teachers carry solver state
        # (diffusers schedulers count steps): one unit computes at a time.
        self._compute = threading.Lock()

    def load(self, config: JobConfig, fingerprint: dict[str, Any], fingerprint_digest: str,
             storage: dict[str, str] | None = None) -> dict[str, Any]:
        """The heavy setup, here where the GPU is: load the teacher, then prove it is the one
        the driver fingerprinted (weight files, configs, library versions); raises otherwise."""
        from cache_schema.store import apply_storage_env

        started = time.perf_counter()
        self.config, self.digest = config, fingerprint_digest
        apply_storage_env(storage)  # the driver's storage_env(): no secrets
        teacher = config.teacher.build(config.video, device=config.device)
        config.teacher.check_loaded(teacher, fingerprint)
        self.layout = dataclasses.replace(teacher.layout(config.keep_step_indices, config.half_dtype),
                                          codec=config.codec)
        self.teacher = teacher
        self.load_seconds = time.perf_counter() - started
        self.device_name = _device_name(config.device)
        return {"load_seconds": self.load_seconds, "device": self.device_name}

    def run_unit(self, unit: Unit, progress_key: str | None = None) -> dict[str, Any]:
        from cache_schema import open_store, write_shard
        from cache_schema.adopt import write_receipt
        from cache_schema.store import split_ref

        cfg = self.config
        if self.teacher is None:
            raise RuntimeError(f"unit {unit.name} not produced: the teacher is not loaded")
        t0 = time.perf_counter()
        records, rejections = [], []
        with self._compute:
            self._record(unit, records, rejections, progress_key)
        t1 = time.perf_counter()
        shard = None
        if records:
            shard = write_shard(cfg.output, records, layout=self.layout, encoding=cfg.encoding,
                                shard_name=unit.name)
        t2 = time.perf_counter()
        result = {"unit": unit.name, "shard": shard, "rejections": rejections,
                  "samples": len(records), "teacher_seconds": t1 - t0, "write_seconds": t2 - t1,
                  "bytes": shard.bytes if shard else 0, "device": self.device_name}
        if shard is not None:  # a driver that dies before committing: the next run adopts it
            extra = {k: v for k, v in result.items() if k != "shard"}
            write_receipt(open_store(split_ref(cfg.output)[0]), shard, self.digest, extra)
        return result

    def _record(self, unit: Unit, records: list, rejections: list, progress_key: str | None) -> None:
        """Records of the unit, one micro-batch per call of the recorder so that progress is
        posted after each (a sample's bytes do not depend on its micro-batch or neighbours)."""
        from .sampler import record_trajectories

        cfg = self.config
        by_negative = groupby(unit.entries, key=lambda e: e.negative_prompt or cfg.negative_prompt)
        done = 0
        for negative, group in by_negative:
            group = list(group)
            size = cfg.teacher.micro_batch or len(group)
            for start in range(0, len(group), size):
                part = group[start : start + size]
                recs, rej = record_trajectories(
                    self.teacher, [e.prompt for e in part], [e.seed for e in part],
                    global_seed=cfg.seed, keep_steps=cfg.keep_step_indices,
                    negative_prompt=negative, half_dtype=cfg.half_dtype,
                    fingerprint_digest=self.digest, micro_batch=size)
                records += recs
                rejections += [{"line": part[r.index].line, "text": r.prompt, "reason": r.reason}
                               for r in rej]
                done += len(part)
                if self.progress is not None and progress_key is not None:
                    self.progress.report.remote(progress_key, done)


def _device_name(device: str) -> str:
    """The hardware a unit ran on, for the job report: bf16 kernels differ between GPU models
    (and CPUs), so a mixed pool makes bytes depend on where a unit ran (one product per job)."""
    import platform

    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu {platform.machine()} ({platform.processor() or 'unknown'})"
