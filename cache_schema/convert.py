"""``convert``: re-encode a generation into a new cache in another registered encoding and/or
value codec (``raw`` / ``zstd`` / ``trajectory``, either way), checksums checked.

For every input shard (in manifest order, one output shard each, keeping its name so the result
is deterministic):

1. read its live records with their stored per-tensor checksums (``verify``: the bytes must
   match them on the way in);
2. write them with the writer, which computes fresh checksums over what it encodes;
3. compare the fresh checksums with the stored ones, per sample and field;
4. read the written shard back from the target store and compare its stored checksums, and the
   checksums of the decoded tensors, with the source's again.

Any difference raises IntegrityError before the manifest: nothing is committed, and the shards
this conversion wrote are deleted (best effort; ``gc`` takes any left over).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

from .checksum import record_checksums
from .codecs import UnknownCodec
from .encodings import get_encoding
from .encodings.common import resolve_fields
from .encodings.step_checksums import is_step_key, step_checksums, without_step_checksums
from .errors import IntegrityError, OperationRefused, UnknownEncoding
from .fields import CHECKSUMS_KEY, FIELD_BY_NAME, CacheLayout, FieldKind
from .index import rows_table
from .lease import WriterLease
from .manifest import ShardInfo
from .operations import OpResult, _new_cache, _open
from .reader import CacheReader, decode_shard
from .store import Store
from .transfer import discard
from .writer import commit_manifest, write_shard_to_store


def _compare(expected: dict[str, str], got: dict[str, str], *, sample_id: str, shard: str,
             stage: str) -> int:
    """Per field, the source's checksum against ``got``; returns the number of fields checked."""
    if set(expected) != set(got):
        raise IntegrityError(f"converted shard {shard}: sample {sample_id} has tensor fields "
                             f"{sorted(got)} {stage}, the source has {sorted(expected)}",
                             shard=shard, sample_id=sample_id)
    for name, digest in expected.items():
        if got[name] != digest:
            raise IntegrityError(f"converted shard {shard}: sample {sample_id} field {name} "
                                 f"differs from the source {stage} (checksum {got[name]} != "
                                 f"{digest}); nothing committed", shard=shard, sample_id=sample_id)
    # the tensor fields checked (text and ids are compared too; steps are parts of a tensor)
    return sum(1 for name in expected
               if name in FIELD_BY_NAME and FIELD_BY_NAME[name].kind is FieldKind.TENSOR)


def _check_readback(written: Iterable[dict[str, Any]], expected: dict[str, dict[str, str]],
                    shard: str) -> None:
    """Every sample of the written shard, once, with the source's checksums (stored and actual)."""
    pending = dict(expected)
    for record in written:
        sid = record["sample_id"]
        sums = pending.pop(sid, None)
        if sums is None:
            raise IntegrityError(f"converted shard {shard} holds an unexpected or repeated sample "
                                 f"{sid}", shard=shard, sample_id=sid)
        stored = record.pop(CHECKSUMS_KEY, None) or {}
        if not any(is_step_key(k) for k in stored):  # an encoding that keeps whole-field ones only
            sums = without_step_checksums(sums)
        _compare(sums, stored, sample_id=sid, shard=shard, stage="as stored after writing")
        computed = {**record_checksums(record), **step_checksums(record)}
        actual = {name: computed.get(name, "absent") for name in sums}
        _compare(sums, actual, sample_id=sid, shard=shard, stage="when read back")
    if pending:
        raise IntegrityError(f"converted shard {shard} lacks {len(pending)} samples "
                             f"(e.g. {sorted(pending)[:3]})", shard=shard)


def _convert_shard(reader: CacheReader, shard: ShardInfo, dst: Store, to: str,
                   layout: CacheLayout) -> tuple[ShardInfo | None, int]:
    """Steps 1-4 for one shard: the written ShardInfo (None if all tombstoned), tensors checked.
    ``layout``: the output's (the source's, with the output codec)."""
    records = list(reader.read_shard(shard, verify=True, keep_checksums=True))  # 1.
    if not records:
        return None, 0  # every sample of this shard is tombstoned
    expected = {}
    for record in records:
        # A field without a stored checksum (older writers) is checked against what was read.
        stored = record.pop(CHECKSUMS_KEY, None) or {}
        # Per-step checksums are computed too when the source predates them.
        expected[record["sample_id"]] = {**record_checksums(record), **step_checksums(record),
                                         **stored}
    written = write_shard_to_store(dst, records, layout=layout, encoding=to,  # 2.
                                   shard_name=shard.name)
    checked = 0
    try:
        for record in records:  # 3. the writer set CHECKSUMS_KEY over what it encoded
            checked += _compare(expected[record["sample_id"]], record[CHECKSUMS_KEY],
                                sample_id=record["sample_id"], shard=written.path,
                                stage="as the writer computed it")
        _check_readback(decode_shard(dst, written, layout, resolve_fields(None)), expected,  # 4.
                        written.path)
    except BaseException:
        dst.delete(written.path)
        raise
    return written, checked


def convert(url: str, *, to: str | None = None, output: str, codec: str | None = None,
            progress: bool = True) -> OpResult:
    """A new cache ``output`` (operation "convert") holding ``url``'s live samples as encoding
    ``to`` (default: the source's) with value codec ``codec`` (default: the source's).

    Same fingerprint and layout but the codec; the manifest's ``extra["args"]`` records the
    source URL, generation, cache id, encoding and codec. Tombstoned samples are not carried
    over. Every tensor decodes to the source's bits (checked by checksum) either way.
    """
    src = _open(url)
    to = to or src.manifest.encoding
    source_codec = src.manifest.layout.codec
    try:
        encoding = get_encoding(to)
        layout = dataclasses.replace(src.manifest.layout, codec=codec or source_codec)
        encoding.check_layout(layout)
    except (UnknownEncoding, UnknownCodec, ValueError) as exc:
        raise OperationRefused(str(exc)) from None
    if to == src.manifest.encoding and layout.codec == source_codec:
        raise OperationRefused(f"{src.ref} is already {to} with codec {source_codec}: name "
                               "another --to encoding or --codec")
    dst = _new_cache(output)
    reader = CacheReader(src.ref)
    shards: list[ShardInfo] = []
    rows: list[tuple] = []
    checked = 0
    bar = tqdm(total=src.manifest.num_samples,
               desc=f"convert {src.manifest.encoding}/{source_codec}->{to}/{layout.codec}",
               unit="sample", disable=not progress)
    with WriterLease(dst, what="convert"):  # gc spares the new shards until the commit
        try:
            for shard in src.manifest.shards:
                written, count = _convert_shard(reader, shard, dst, to, layout)
                if written is not None:
                    shards.append(written)
                    rows.extend(written.index)
                    checked += count
                    bar.update(written.samples)
        except BaseException:
            for written in shards:  # never referenced: remove rather than leave orphans
                discard(dst, written.path)
            raise
        finally:
            bar.close()
        if not shards:
            raise OperationRefused(f"{src.ref} has no live samples; nothing to convert")
        manifest = commit_manifest(
            dst, parent=None, shards=tuple(shards), index_table=rows_table(rows), layout=layout,
            fingerprint=src.manifest.fingerprint, encoding=to, operation="convert",
            extra={"args": {"from": src.ref, "source_url": src.store.url,
                            "source_generation": src.manifest.generation,
                            "source_cache_id": src.manifest.cache_id,
                            "source_encoding": src.manifest.encoding, "to": to,
                            "source_codec": source_codec, "codec": layout.codec,
                            "checked_tensors": checked}})
    return OpResult(manifest, added=len(rows))
