"""Counted nouns for messages people read (``1 shard``, ``2 shards``): one helper for every
package, so no message says "1 shards"."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 shard``, ``2 shards``, ``1,234 samples`` (``plural`` for irregular nouns)."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
