"""Streaming cache loader: deterministic order, rank split, prefetch, exact mid-epoch resume.

The order of an epoch is a pure function of (seed, epoch) and the cache's samples (not of the
order its manifest happens to list shards in, which follows actor timing): shards sorted by
their logical name are permuted, then samples
are shuffled within windows of ``buffer_shards`` consecutive shards (a shuffle buffer that
never holds more than that many shards). Rank r takes every world-th sample of that order. The
resume state is (epoch, samples of the epoch consumed by all ranks together), so it depends
neither on how many prefetch threads read ahead nor on the world size: a run resumed with a
different number of ranks continues the same epoch order with no sample missed or repeated
(ranks of a data-parallel run consume in lockstep). Tombstoned samples (filter generations) are
not part of any epoch.

Partial reads (issue 18): the rows a trainer draws from a record (which states, which jump) are a
function of (seed, epoch, sample id), so a trainer can tell the loader which steps each record's
rows use (``select_steps``, e.g. ``stage1_selector``). The loader then asks the reader for only
those steps: on Zarr only those (sample, step) chunks are fetched, by ranged reads; steps not
read are zero in the record (the rows never look at them), so training is the same, step for
step. The order, the rank split and the resume state do not change. ``bytes_read`` /
``bytes_per_sample`` count what the reads moved (the loader's metrics).
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from cache_schema import CacheReader, IntegrityError, ShardInfo
from cache_schema.encodings.meter import ReadMeter

# (epoch, sample id) -> {step field: positions along S that the record's rows use}
StepSelector = Callable[[int, str], Mapping[str, Sequence[int]]]


@dataclass(frozen=True, slots=True)
class LoaderConfig:
    seed: int = 0
    buffer_shards: int = 8  # shuffle window, in shards
    # Decoded shards read ahead of the consumer: a whole shuffle window, so crossing into the
    # next window (or epoch) does not stall; memory is about two windows of decoded shards.
    prefetch_shards: int = 8
    read_workers: int = 1  # threads reading shards in parallel (more for high-latency stores)
    rank: int = 0
    world_size: int = 1
    verify_checksums: bool = True
    skip_corrupt_shards: bool = False
    # With a step selector (CacheStream.select_steps): read only the steps the rows use.
    partial_reads: bool = True

    @classmethod
    def for_training(cls, config: Any, rank: int = 0, world_size: int = 1) -> LoaderConfig:
        """From a stage's training config (TrainConfig, ARConfig): its seed and loader fields."""
        return cls(seed=config.seed, buffer_shards=config.buffer_shards,
                   prefetch_shards=config.prefetch_shards, read_workers=config.loader_workers,
                   rank=rank, world_size=world_size, skip_corrupt_shards=config.skip_corrupt_shards)


def epoch_order(live_counts: Sequence[int], seed: int, epoch: int, buffer_shards: int
                ) -> list[tuple[int, int]]:
    """[(shard index, k)] of the whole epoch, before the rank split: the k-th live record."""
    rng = np.random.default_rng([seed, epoch])
    shard_order = rng.permutation(len(live_counts))
    order: list[tuple[int, int]] = []
    for start in range(0, len(shard_order), buffer_shards):
        window = [(int(s), o) for s in shard_order[start : start + buffer_shards]
                  for o in range(live_counts[s])]
        order.extend(window[i] for i in rng.permutation(len(window)))
    return order


# Shard order of the epoch permutation. "name": by logical shard name (the work unit, stable
# across retries and runs). A manifest lists shards in the order units finished, which varies
# with actor timing, so "manifest" order made the same cache train differently run to run;
# it is kept only to resume loader states saved before this field existed.


def ordered_shards(shards: Sequence[ShardInfo], order: str) -> list[ShardInfo]:
    if order == "manifest":
        return list(shards)
    return sorted(shards, key=lambda s: (s.name, s.root or "", s.path))


def live_counts(reader: CacheReader, shards: Sequence[ShardInfo] | None = None) -> list[int]:
    """Live records per shard of ``shards`` (default: the manifest's): tombstones of filter
    generations are not part of an epoch."""
    shards = reader.shards if shards is None else shards
    removed = reader.removed_ids()
    if not removed:
        return [s.samples for s in shards]
    table = reader.index()
    by_shard: dict[str, int] = {}
    for sid, shard in zip(table.column("sample_id").to_pylist(), table.column("shard").to_pylist()):
        if sid in removed:
            by_shard[shard] = by_shard.get(shard, 0) + 1
    return [s.samples - by_shard.get(s.name, 0) for s in shards]


class CacheStream:
    """Iterate records of a cache generation forever (epoch after epoch) from a resume state."""

    def __init__(self, url: str, *, fields: Sequence[str], steps: Sequence[int] | None = None,
                 config: LoaderConfig = LoaderConfig()):
        self.reader = CacheReader(url)
        self.fields, self.steps, self.config = tuple(fields), steps, config
        self._set_shard_order("name")
        # This rank reads order[start + rank :: world_size]; ``position`` counts what it yielded.
        self.epoch, self.start, self.position = 0, 0, 0
        self.skipped_shards: list[str] = []
        self.wait_seconds = 0.0
        self.meter = ReadMeter()  # bytes moved by this stream's shard reads
        self.yielded = 0  # records this stream has yielded (bytes_per_sample's denominator)
        self.selector: StepSelector | None = None
        self._shard_ids: dict[str, list[str]] | None = None
        self._needed: dict[int, dict[int, set[int]]] = {}  # epoch -> shard -> this rank's k

    # -- partial reads ------------------------------------------------------------------------
    def select_steps(self, selector: StepSelector | None) -> None:
        """Read only the steps ``selector(epoch, sample_id)`` names for each record this rank
        yields (None: whole records). Call before iterating."""
        self.selector = selector if self.config.partial_reads else None

    @property
    def bytes_read(self) -> int:
        return self.meter.bytes

    @property
    def bytes_per_sample(self) -> float:
        """Bytes the shard reads moved per record yielded so far (read-ahead included)."""
        return self.meter.bytes / max(1, self.yielded)

    def metrics(self) -> dict[str, float]:
        return {"loader_bytes": float(self.meter.bytes), "loader_requests": float(self.meter.requests),
                "loader_bytes_per_sample": self.bytes_per_sample,
                "loader_wait_s": self.wait_seconds}

    def _live_ids(self, shard: ShardInfo) -> list[str]:
        """Sample ids of the live records of ``shard`` in offset order (from the index)."""
        if self._shard_ids is None:
            table = self.reader.index()
            removed = self.reader.removed_ids()
            rows = sorted(zip(table.column("shard").to_pylist(), table.column("offset").to_pylist(),
                              table.column("sample_id").to_pylist()))
            ids: dict[str, list[str]] = {}
            for name, _, sid in rows:
                if sid not in removed:
                    ids.setdefault(name, []).append(sid)
            self._shard_ids = ids
        return self._shard_ids.get(shard.name, [])

    def _selection(self, epoch: int, shard_index: int) -> dict[str, Mapping[str, Sequence[int]]]:
        """{sample id: steps} of the records of a shard this rank yields in ``epoch``."""
        if epoch not in self._needed:
            needed: dict[int, set[int]] = {}
            for s, k in self.rank_order(epoch, 0):
                needed.setdefault(s, set()).add(k)
            self._needed = {e: v for e, v in self._needed.items() if e >= epoch - 1}
            self._needed[epoch] = needed
        ids = self._live_ids(self.shards[shard_index])
        return {ids[k]: self.selector(epoch, ids[k])
                for k in sorted(self._needed[epoch].get(shard_index, ())) if k < len(ids)}

    def _set_shard_order(self, order: str) -> None:
        if order == getattr(self, "shard_order", None):
            return  # a resume in the same order: nothing to re-sort or re-count
        self.shard_order = order
        self.shards = ordered_shards(self.reader.shards, order)
        self.live_counts = live_counts(self.reader, self.shards)

    # -- resume state -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        consumed = self.start + self.position * self.config.world_size
        return {"epoch": self.epoch, "consumed": consumed,
                "generation": self.reader.generation, "cache_id": self.reader.manifest.cache_id,
                "rank": self.config.rank, "world_size": self.config.world_size,
                "shard_order": self.shard_order}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("cache_id") not in (None, self.reader.manifest.cache_id) or \
                state.get("generation") not in (None, self.reader.generation):
            raise ValueError(f"loader state is for cache {state.get('cache_id')} generation "
                             f"{state.get('generation')}, not {self.reader.manifest.cache_id} "
                             f"generation {self.reader.generation}: resume on the same cache@generation")
        self._set_shard_order(state.get("shard_order", "manifest"))  # older states: manifest
        self.epoch, self.start, self.position = int(state["epoch"]), int(state["consumed"]), 0

    def rank_order(self, epoch: int, start: int | None = None) -> list[tuple[int, int]]:
        cfg = self.config
        order = epoch_order(self.live_counts, cfg.seed, epoch, cfg.buffer_shards)
        return order[(self.start if start is None else start) + cfg.rank :: cfg.world_size]

    # -- reading ------------------------------------------------------------------------------
    def _fetch(self, epoch: int, shard_index: int) -> list[dict[str, Any]] | None:
        """What the prefetcher reads: a shard, cut to the steps this rank's rows of ``epoch``
        use when a selector is set."""
        if self.selector is None:
            return self._read(shard_index)
        return self._read(shard_index, self._selection(epoch, shard_index))

    def _read(self, shard_index: int, select: dict | None = None) -> list[dict[str, Any]] | None:
        shard = self.shards[shard_index]
        try:
            return list(self.reader.read_shard(shard, self.fields, self.steps,
                                               verify=self.config.verify_checksums,
                                               select=select, meter=self.meter))
        except IntegrityError:
            if not self.config.skip_corrupt_shards:
                raise
            self.skipped_shards.append(shard.path)
            return None

    def _first_use(self) -> Iterator[tuple[int, int]]:
        """(epoch, shard index) in the order this rank first needs them, from the resume point
        on, epoch after epoch: the prefetcher reads the next epoch's first shards while the
        current epoch's last ones are consumed, so an epoch boundary is not a stall."""
        epoch, start, position = self.epoch, self.start, self.position  # captured now

        def plan() -> Iterator[tuple[int, int]]:
            e, s, p = epoch, start, position
            while True:
                for shard_index in dict.fromkeys(i for i, _ in self.rank_order(e, s)[p:]):
                    yield e, shard_index
                e, s, p = e + 1, 0, 0
        return plan()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if not self.rank_order(self.epoch, 0):
            raise ValueError(f"rank {self.config.rank} of {self.config.world_size} gets no samples "
                             f"of {self.reader.url} ({sum(self.live_counts)} live samples): use "
                             "fewer ranks or a larger cache")
        prefetch = _Prefetcher(self._first_use(), lambda e, i: self._fetch(e, i),
                               workers=max(1, self.config.read_workers),
                               depth=max(1, self.config.prefetch_shards))
        try:
            while True:
                yield from self._epoch(self.rank_order(self.epoch), prefetch)
                self.epoch, self.start, self.position = self.epoch + 1, 0, 0
        finally:
            prefetch.close()

    def _epoch(self, order, prefetch: _Prefetcher) -> Iterator[dict[str, Any]]:
        epoch = self.epoch
        remaining = collections.Counter(s for s, _ in order[self.position :])
        for shard_index, k in order[self.position :]:
            records = prefetch.get(epoch, shard_index, self)
            self.position += 1
            remaining[shard_index] -= 1
            if remaining[shard_index] == 0:
                prefetch.release(epoch, shard_index)  # the window moved on: free the shard
            if records is not None:
                self.yielded += 1
                yield records[k]  # read_shard yields live records only, in offset order


class _Prefetcher:
    """Reads shards in first-use order on a background thread (up to ``workers`` at once,
    delivered in order) and holds up to ``depth`` decoded shards ahead of the consumer."""

    def __init__(self, plan: Iterator[tuple[int, int]], read, *, workers: int, depth: int):
        self._ready: queue.Queue = queue.Queue(maxsize=depth)
        self._loaded: dict[tuple[int, int], list[dict[str, Any]] | None] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(plan, read, workers),
                                        daemon=True, name="cache-prefetch")
        self._thread.start()

    def _produce(self, plan, read, workers: int) -> None:
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cache-read")
        pending: collections.deque = collections.deque()
        try:
            while not self._stop.is_set():
                while len(pending) < workers:
                    key = next(plan)
                    try:
                        pending.append((key, pool.submit(read, *key)))
                    except RuntimeError:  # interpreter shutting down: stop quietly
                        return
                key, future = pending.popleft()
                try:
                    item = (key, future.result(), None)
                except Exception as exc:  # noqa: BLE001  (any read error is raised in the consumer, the shard named)
                    item = (key, None, exc)
                while not self._stop.is_set():
                    try:
                        self._ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if item[2] is not None:
                    return
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def get(self, epoch: int, shard_index: int, stream: CacheStream):
        key = (epoch, shard_index)
        while key not in self._loaded:
            t0 = time.perf_counter()
            got, records, error = self._ready.get()
            stream.wait_seconds += time.perf_counter() - t0
            if error is not None:
                raise error
            self._loaded[got] = records
        return self._loaded[key]

    def release(self, epoch: int, shard_index: int) -> None:
        self._loaded.pop((epoch, shard_index), None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def stage1_selector(*, seed: int, num_kept: int, schedule: Sequence[int], kd_fraction: float,
                    uniforms: Callable[[int, int, str], np.ndarray]) -> StepSelector:
    """The steps stage 1's rows of a record use (``losses.kd_rows`` / ``step_rows``), from the
    same per-record uniforms (``uniforms(seed, epoch, sample_id)``, widened to float32 as the
    collate does): the KD row's state and velocities (when the record gives a KD row), the
    jump's start state and velocities and its end state (x0 after the last start)."""
    schedule = [int(p) for p in schedule]
    n, s = len(schedule), np.float32(num_kept)

    def select(epoch: int, sample_id: str) -> dict[str, tuple[int, ...]]:
        u = np.asarray(uniforms(seed, epoch, sample_id), dtype=np.float32)
        k = min(int(u[2] * np.float32(n)), n - 1)
        states, velocities = {schedule[k]}, {schedule[k]}
        if k + 1 < n:
            states.add(schedule[k + 1])
        if kd_fraction >= 1.0 or u[3] < np.float32(kd_fraction):
            i = min(int(u[0] * s), num_kept - 1)
            states.add(i)
            velocities.add(i)
        v = tuple(sorted(velocities))
        return {"states": tuple(sorted(states)), "v_cond": v, "v_uncond": v}
    return select
