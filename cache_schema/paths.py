"""Where a manifest may send a reader (DESIGN 3.3): paths that stay inside the cache root.

A cache may come from someone else, so every path in its manifest is data to check, not a
place to go. A shard path or index path is relative to the cache root, in posix form, below the
folder its kind lives in (``shards/``, ``index/``), without ``.``/``..`` segments, backslashes,
schemes or drive letters. A shard of another cache (append or merge by reference) names that
cache's root relative to this one (``../src``): on the same protocol and, for object stores,
in the same bucket; never an absolute path or another URL scheme.
"""

from __future__ import annotations

import posixpath

from .errors import ManifestError

SHARD_DIR = "shards"
INDEX_DIR = "index"


def _refuse(where: str, what: str, value: object, rule: str) -> ManifestError:
    return ManifestError(f"{where}: {what} {value!r} {rule}; this cache is not safe to open "
                         "(its manifest points outside the cache root)")


def check_relative_path(rel: object, *, top: str, where: str, what: str) -> str:
    """``rel`` if it is a clean relative path below ``top/``; ManifestError otherwise."""
    if not isinstance(rel, str) or not rel:
        raise _refuse(where, what, rel, "is not a non-empty string")
    if "://" in rel or ":" in rel.split("/", 1)[0]:
        raise _refuse(where, what, rel, "carries a URL scheme or drive")
    if rel.startswith("/") or "\\" in rel or "\0" in rel:
        raise _refuse(where, what, rel, "is absolute or not a posix path")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise _refuse(where, what, rel, "has an empty, '.' or '..' segment")
    if parts[0] != top or len(parts) < 2:
        raise _refuse(where, what, rel, f"is not below {top}/")
    return rel


def check_root(root: object, *, where: str) -> str:
    """A referenced cache root as ``ShardInfo.root`` records it: relative, normalised."""
    if not isinstance(root, str) or not root:
        raise _refuse(where, "root", root, "is not a non-empty string")
    if "://" in root or root.startswith("/") or "\\" in root or "\0" in root:
        raise _refuse(where, "root", root,
                      "is absolute or another URL (a referenced cache must be named relative to "
                      "this one, on the same store: re-append it with this s2dit)")
    if posixpath.normpath(root) != root or root == ".":
        raise _refuse(where, "root", root, "is not a normalised relative path")
    return root


def split_scheme(url: str) -> tuple[str, str]:
    """``s3://b/x`` -> (``s3://``, ``b/x``); a plain path has no scheme."""
    scheme, sep, path = url.partition("://")
    return (scheme + sep, path) if sep else ("", url)


def resolve_root(base: str, root: str) -> str:
    """The URL of referenced root ``root`` seen from cache ``base`` (``check_root`` rules);
    for object stores it must stay in ``base``'s bucket."""
    check_root(root, where=f"cache {base}")
    scheme, path = split_scheme(base)
    resolved = posixpath.normpath(posixpath.join(path, root))
    if scheme and (resolved.startswith("..") or
                   resolved.split("/", 1)[0] != path.split("/", 1)[0]):
        raise _refuse(f"cache {base}", "root", root, "leaves the cache's bucket")
    return scheme + resolved


__all__ = ["INDEX_DIR", "SHARD_DIR", "check_relative_path", "check_root", "resolve_root",
           "split_scheme"]
