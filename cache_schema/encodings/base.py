"""The one interface every physical encoding of the logical schema implements (DESIGN 3.4).

An encoding knows bytes, never stores: it turns records into the objects of one shard and reads
records back from a store path. Writing (hash beside the put), verifying (sizes, sha256), copying
between caches and converting are written once on top of it (writer, verify, transfer, convert),
so a new encoding is a subclass plus one ``register_encoding`` call (``registry.py``).

A shard is one object (key ``""``: the shard path itself, as a WebDataset tar) or a folder of
objects (keys relative to the shard path, as a Zarr group). Its hash is ``shard_hash`` of the
objects' sha256: the object's own sha256 for a one-object shard, else ``group_hash``.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeAlias

from ..fields import CacheLayout
from ..store import Store
from .meter import ReadMeter

SINGLE_OBJECT = ""  # the object key of a one-object shard
# {sample id: {step field: positions along S to read}} (a training loader's rows need a few
# steps of each record; a step or a record that is not listed is not needed).
Selection: TypeAlias = Mapping[str, Mapping[str, Sequence[int]]]


def object_path(shard_path: str, key: str) -> str:
    """Store path of object ``key`` of the shard at ``shard_path``."""
    return f"{shard_path}/{key}" if key else shard_path


def group_hash(object_hashes: dict[str, str]) -> str:
    """sha256 over the sorted "key sha256" lines of a multi-object shard's objects."""
    lines = "".join(f"{key} {digest}\n" for key, digest in sorted(object_hashes.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


class Encoding(ABC):
    """How records become one shard's objects and back. Instances hold no per-read state."""

    name: ClassVar[str]  # the name a manifest carries (ShardInfo.encoding, Manifest.encoding)
    suffix: ClassVar[str]  # of the shard's path, e.g. ".tar"
    # Exceptions that mean "these bytes are not a readable shard": the reader reports them as
    # IntegrityError naming the shard. A requested step that is not stored is never one of them.
    read_errors: ClassVar[tuple[type[BaseException], ...]] = (ValueError, EOFError, OSError,
                                                              KeyError)
    # True: ``iter_records(select=...)`` reads only the selected steps of step fields (the
    # others come back zero); False: it reads and returns every step.
    partial_reads: ClassVar[bool] = False

    def check_layout(self, layout: CacheLayout) -> None:
        """Raise ValueError (saying what to use instead) if this encoding cannot store a cache
        of ``layout`` (e.g. its codec)."""
        self.check_codec(layout.codec)

    def check_codec(self, codec: str) -> None:
        """Raise ValueError (saying what to use instead) if this encoding cannot store tensor
        values of ``codec`` (a job config asks this before it knows its layout)."""

    @abstractmethod
    def encode(self, records: Sequence[dict[str, Any]], layout: CacheLayout) -> dict[str, bytes]:
        """{object key: bytes} of one shard holding ``records`` (validated, checksums under
        ``CHECKSUMS_KEY``), in offset order; deterministic: the same records, the same bytes."""

    @abstractmethod
    def iter_records(self, store: Store, path: str, layout: CacheLayout, fields: Sequence[str],
                     steps: Sequence[int] | None = None, *, select: Selection | None = None,
                     meter: ReadMeter | None = None) -> Iterator[dict[str, Any]]:
        """Every record of the shard at ``path`` in offset order (tombstones included): only
        ``fields`` (which always hold ``sample_id``) decoded, step fields cut to ``steps``
        (``layout.step_position`` raises for a step not stored), and the stored per-tensor
        checksums under ``CHECKSUMS_KEY``. ``select`` (not with ``steps``): per record, the
        positions of step fields needed (see ``partial_reads``); ``meter`` counts the bytes
        read."""

    def objects(self, store: Store, path: str) -> dict[str, int]:
        """{object key: size} of the stored shard; FileNotFoundError (or {}) when absent."""
        return {SINGLE_OBJECT: store.size(path)}

    def shard_hash(self, object_hashes: dict[str, str]) -> str:
        """The manifest's sha256 of a shard from its objects' sha256."""
        if set(object_hashes) == {SINGLE_OBJECT}:
            return object_hashes[SINGLE_OBJECT]
        return group_hash(object_hashes)
