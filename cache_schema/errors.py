"""Typed errors of the cache contract, all in this one file. Every message names the thing and
what to do. Each is a ``CacheError``; those a caller may also meet as a plain Python error keep
that base too (``ValueError`` for bad input, ``KeyError`` for a missing key)."""


class CacheError(Exception):
    """Base of every cache_schema error."""


class StoreError(CacheError):
    """The object store refused or failed an operation (after retries)."""


class ManifestError(CacheError):
    """A manifest is missing, malformed, or a reference (@N / @tag) does not resolve."""


class NoCache(ManifestError):
    """A URL holds no committed generation: nothing is there, or its job has not committed."""


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


class RecordError(CacheError, ValueError):
    """A record breaks the schema; ``field`` names the offending field."""

    def __init__(self, field: str, rule: str, *, sample_id: str | None = None):
        where = f" (sample {sample_id})" if sample_id else ""
        super().__init__(f"field '{field}'{where}: {rule}")
        self.field = field
        self.rule = rule
        self.sample_id = sample_id


class StepNotStored(CacheError, KeyError):
    """A reader asked for a solver step the cache did not keep (never a silent neighbour)."""

    def __str__(self) -> str:  # the message itself, not KeyError's repr of it
        return str(self.args[0]) if self.args else ""


class UnknownEncoding(CacheError, ValueError):
    """An encoding name no registered encoding answers to (``cache_schema.encoding_names()``)."""


class OperationRefused(CacheError, ValueError):
    """A versioning operation would be wrong or empty (bad filter, overlap, non-empty output);
    nothing was written."""


class UnpinnedIndexWarning(UserWarning):
    """A schema-1 manifest (written before manifests pinned their sample index) is being read:
    its index cannot be checked against a digest. A new generation of the cache pins it."""
