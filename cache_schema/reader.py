"""Streaming reads of one cache generation: selected fields, and for Zarr selected steps only."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from .checksum import check_record_checksums, tensor_checksum
from .codecs import get_codec
from .encodings import get_encoding
from .encodings.base import Selection
from .encodings.common import resolve_fields
from .encodings.meter import ReadMeter
from .encodings.step_checksums import step_checksum_key
from .errors import IntegrityError, StepNotStored
from .fields import CHECKSUMS_KEY, CacheLayout
from .index import STATUS_OK, read_index
from .manifest import Manifest, ShardInfo, read_manifest, referenced_store, resolve_generation
from .store import Store, open_store, split_ref


def check_record(record: dict[str, Any], shard: str) -> None:
    """Compare each field (tensors, text, ids) with its stored checksum; IntegrityError names
    shard, sample and field (``checksum.check_record_checksums``)."""
    check_record_checksums(record, record.get(CHECKSUMS_KEY) or {}, shard)


def check_selected(record: dict[str, Any], shard: str, partial: dict[str, Sequence[int]]) -> bool:
    """Check a record of a partial read: the steps read of ``partial`` fields against their
    per-step checksums, every other field whole. False: the cache has no per-step checksums
    (written before them), so the partial steps cannot be checked."""
    sums = record.get(CHECKSUMS_KEY) or {}
    check_record({k: v for k, v in record.items() if k not in partial}, shard)
    for name, positions in partial.items():
        if name not in record:
            continue
        if step_checksum_key(name, 0) not in sums:
            return False
        for k in positions:
            key = step_checksum_key(name, int(k))
            if tensor_checksum(record[name][int(k)]) != sums[key]:
                raise IntegrityError(f"shard {shard}: sample {record.get('sample_id')} field "
                                     f"{name} step position {k} fails its checksum (silent "
                                     "corruption)", shard=shard, sample_id=record.get("sample_id"))
    return True


class CacheReader:
    """Read ``url[@N|@tag]``; the newest generation when no ref is given."""

    def __init__(self, url: str):
        base, ref = split_ref(url)
        self.url = url
        self.store = open_store(base)
        self.generation = resolve_generation(self.store, ref)
        self.manifest: Manifest = read_manifest(self.store, self.generation)
        self.layout = self.manifest.layout
        self.fingerprint = self.manifest.fingerprint
        self._removed: set[str] | None = None
        self._stores: dict[str, Store] = {}

    @property
    def shards(self) -> list[ShardInfo]:
        return list(self.manifest.shards)

    def __len__(self) -> int:
        return self.manifest.num_samples

    def index(self):
        """The generation's sample index as a pyarrow Table."""
        return read_index(self.store, self.manifest)

    def removed_ids(self) -> set[str]:
        if self._removed is None:
            table = self.index()
            status = table.column("status").to_pylist()
            ids = table.column("sample_id").to_pylist()
            self._removed = {sid for sid, st in zip(ids, status) if st != STATUS_OK}
        return self._removed

    def store_for(self, shard: ShardInfo) -> Store:
        """The store holding ``shard``: this cache's, or the cache it was appended from."""
        if shard.root is None:
            return self.store
        if shard.root not in self._stores:
            self._stores[shard.root] = referenced_store(self.store, shard.root)
        return self._stores[shard.root]

    def partial_fields(self, shard: ShardInfo) -> tuple[str, ...]:
        """The step fields a ``select`` read of ``shard`` fetches step by step (none: whole)."""
        if not get_encoding(shard.encoding).partial_reads or \
                not get_codec(self.layout.codec).step_chunks:
            return ()
        return tuple(n for n in ("states", "v_cond", "v_uncond"))

    def read_shard(self, shard: ShardInfo, fields: Iterable[str] | None = None,
                   steps: Sequence[int] | None = None, *, verify: bool = False,
                   keep_checksums: bool = False, select: Selection | None = None,
                   meter: ReadMeter | None = None) -> Iterator[dict[str, Any]]:
        """Live records of a shard in offset order (tombstoned samples skipped).

        ``select`` ({sample id: {step field: positions}}): only those steps of the step fields
        are fetched where the encoding can (``partial_fields``; the others are zero), and
        ``verify`` checks them by their per-step checksums. A cache written before per-step
        checksums is then read whole instead. ``meter`` counts the bytes moved."""
        names = resolve_fields(fields)
        unreadable = get_encoding(shard.encoding).read_errors  # an unknown name fails here
        removed = self.removed_ids()
        where = self.store_for(shard).url  # errors name the cache the shard really lives in
        partial = self.partial_fields(shard) if select is not None else ()
        if select is not None and not partial:
            select = None  # this shard is read whole: nothing to select
        count = 0
        try:
            for record in self._decode(shard, names, steps, select, meter):
                count += 1
                if record["sample_id"] in removed:
                    continue
                if verify and select is not None:
                    wanted = select.get(record["sample_id"], {})
                    read = {n: wanted.get(n, ()) for n in partial}
                    if not check_selected(record, shard.path, read):
                        # no per-step checksums in this cache: read the shard whole instead
                        yield from self.read_shard(shard, fields, steps, verify=verify,
                                                   keep_checksums=keep_checksums, meter=meter)
                        return
                elif verify and steps is None:
                    check_record(record, shard.path)
                if not keep_checksums:
                    record.pop(CHECKSUMS_KEY, None)
                yield record
            if count != shard.samples:
                raise IntegrityError(f"shard {shard.path} of {where} holds {count} records, "
                                     f"the manifest says {shard.samples} (truncated or corrupt); run "
                                     "`s2dit cache verify --deep`", shard=shard.path)
        except (IntegrityError, StepNotStored):
            raise
        except FileNotFoundError as exc:
            hint = (f"; this cache depends on {where} (appended or merged by reference): restore it"
                    if shard.root else "")
            raise IntegrityError(f"shard {shard.path} of {where} is missing ({exc}){hint}",
                                 shard=shard.path) from exc
        except unreadable as exc:
            raise IntegrityError(f"shard {shard.path} of {where} is unreadable "
                                 f"({type(exc).__name__}: {exc}); run `s2dit cache verify --deep`",
                                 shard=shard.path) from exc

    def _decode(self, shard: ShardInfo, names: Sequence[str], steps: Sequence[int] | None,
                select: Selection | None = None, meter: ReadMeter | None = None
                ) -> Iterator[dict[str, Any]]:
        return decode_shard(self.store_for(shard), shard, self.layout, names, steps,
                            select=select, meter=meter)

    def iter_records(self, fields: Iterable[str] | None = None, steps: Sequence[int] | None = None,
                     shards: Sequence[ShardInfo] | None = None, *, verify: bool = False
                     ) -> Iterator[dict[str, Any]]:
        for shard in shards if shards is not None else self.manifest.shards:
            yield from self.read_shard(shard, fields, steps, verify=verify)


def decode_shard(store: Store, shard: ShardInfo, layout: CacheLayout, names: Sequence[str],
                 steps: Sequence[int] | None = None, *, select: Selection | None = None,
                 meter: ReadMeter | None = None) -> Iterator[dict[str, Any]]:
    """Every record of a shard object (tombstones included), checksums under CHECKSUMS_KEY."""
    encoding = get_encoding(shard.encoding)
    if select is None and meter is None:
        yield from encoding.iter_records(store, shard.path, layout, names, steps)
    else:
        yield from encoding.iter_records(store, shard.path, layout, names, steps, select=select,
                                         meter=meter)


def records_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if set(a) != set(b):
        return False
    return all(np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k]
               for k in a)
