"""Typed errors of the cache contract. Every message names the thing and what to do."""


class CacheError(Exception):
    """Base of every cache_schema error."""


class StoreError(CacheError):
    """The object store refused or failed an operation (after retries)."""


class ManifestError(CacheError):
    """A manifest is missing, malformed, or a reference (@N / @tag) does not resolve."""


class SchemaVersionError(ManifestError):
    """A manifest was written by a newer schema than this code understands."""


class IntegrityError(CacheError):
    """Stored bytes do not match their recorded hash or checksum; names shard and sample."""

    def __init__(self, message: str, *, shard: str | None = None, sample_id: str | None = None):
        super().__init__(message)
        self.shard = shard
        self.sample_id = sample_id


class FingerprintMismatch(CacheError):
    """Two caches (or a cache and a config) have different teacher fingerprints."""


class GenerationConflict(CacheError):
    """Another writer committed the generation this writer tried to take."""


class AlreadyExists(StoreError):
    """A create-only put found the object already present."""


class OperationRefused(CacheError, ValueError):
    """A versioning operation would be wrong or empty (bad filter, overlap, non-empty output);
    nothing was written."""
