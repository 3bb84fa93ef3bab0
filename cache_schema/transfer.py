"""Moving shards between caches: by reference on the same store, else a verified copy.

A reference adds no bytes: the new manifest names the shard where it lies (``ShardInfo.root``,
relative to the new cache when both share a filesystem, so they can move together),
so the receiving cache depends on the source cache's objects, which its own immutable
manifests keep referenced (``gc`` of the source never deletes them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import uuid
from pathlib import Path

from .encodings import get_encoding, object_path
from .errors import IntegrityError
from .manifest import ShardInfo, referenced_store
from .store import Store, relative_root, resolve_root
from .writer import SHARD_DIR

COPY_BLOCK = 8 * 2**20


def same_store(a: Store, b: Store) -> bool:
    """True when one fsspec filesystem (same options; same bucket for object stores) holds both."""
    if a.is_local and b.is_local:
        return True
    if type(a.fs) is not type(b.fs) or a.is_local or b.is_local:
        return False
    same_options = a.fs is b.fs or a.fs.storage_options == b.fs.storage_options
    return same_options and a.root.split("/", 1)[0] == b.root.split("/", 1)[0]


def source_store(cache: Store, shard: ShardInfo) -> Store:
    """The store a shard of ``cache``'s manifest actually lies in."""
    if shard.root is None:
        return cache
    return referenced_store(cache, shard.root)


def reference(cache: Store, shard: ShardInfo, dst: Store, *, name: str) -> ShardInfo:
    """``shard`` of ``cache``, named ``name``, as seen from ``dst`` on the same store."""
    root = resolve_root(cache.url, shard.root) if shard.root else cache.url
    return dataclasses.replace(shard, name=name, index=None,
                               root=None if root == dst.url else relative_root(root, dst.url))


def _copy_object(src: Store, rel: str, dst: Store, dst_rel: str) -> str:
    digest = hashlib.sha256()
    if dst.is_local:
        Path(dst.path(dst_rel)).parent.mkdir(parents=True, exist_ok=True)
    with src.fs.open(src.path(rel), "rb", block_size=COPY_BLOCK) as fin, \
            dst.fs.open(dst.path(dst_rel), "wb") as fout:
        while block := fin.read(COPY_BLOCK):
            digest.update(block)
            fout.write(block)
    return digest.hexdigest()


def discard(store: Store, rel: str) -> None:
    """Delete an object no manifest names yet, best effort: absent or unreachable, ``gc`` takes
    whatever is left."""
    with contextlib.suppress(Exception):
        store.delete(rel)


def copy(cache: Store, shard: ShardInfo, dst: Store, *, name: str) -> ShardInfo:
    """Stream ``shard``'s objects into ``dst``'s shards/ under a fresh path; sha256 checked."""
    src = source_store(cache, shard)
    encoding = get_encoding(shard.encoding)
    dst_rel = f"{SHARD_DIR}/{name}.{uuid.uuid4().hex[:8]}{encoding.suffix}"
    try:
        objects = encoding.objects(src, shard.path)
        if not objects:
            raise FileNotFoundError(f"{src.url_of(shard.path)} does not exist")
        digest = encoding.shard_hash({key: _copy_object(src, object_path(shard.path, key),
                                                        dst, object_path(dst_rel, key))
                                      for key in objects})
    except FileNotFoundError as exc:
        discard(dst, dst_rel)
        raise IntegrityError(f"shard {src.url_of(shard.path)} named by the source's manifest is "
                             f"missing ({exc}); run `s2dit cache verify` on the source",
                             shard=shard.path) from None
    except BaseException:
        discard(dst, dst_rel)  # a half-copied shard: never referenced, so remove it now
        raise
    if digest != shard.sha256:
        discard(dst, dst_rel)
        raise IntegrityError(f"shard {src.url_of(shard.path)} does not match its manifest sha256 "
                             "while copying; run `s2dit cache verify --deep` on the source",
                             shard=shard.path)
    return dataclasses.replace(shard, name=name, path=dst_rel, root=None, index=None)


def bring(cache: Store, shard: ShardInfo, dst: Store, *, name: str) -> ShardInfo:
    """Reference when ``dst`` shares the store, else copy."""
    src = source_store(cache, shard)
    if same_store(src, dst):
        if not src.exists(shard.path):  # never commit a reference to nothing
            raise IntegrityError(f"shard {src.url_of(shard.path)} named by the source's manifest "
                                 "is missing; run `s2dit cache verify` on the source",
                                 shard=shard.path)
        return reference(cache, shard, dst, name=name)
    return copy(cache, shard, dst, name=name)
