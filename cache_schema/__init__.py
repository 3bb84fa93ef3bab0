"""The cache contract between teacher jobs and student training (DESIGN 3).

Imports nothing of the project and no torch, ray or diffusers.
"""

from .encodings import (DEFAULT_ENCODING, Encoding, encoding_names, get_encoding,
                        register_encoding, unregister_encoding)
from .errors import (AlreadyExists, CacheError, FingerprintMismatch, GenerationConflict,
                     IntegrityError, ManifestError, OperationRefused, RecordError,
                     SchemaVersionError, StepNotStored, StoreError, UnknownEncoding)
from .fields import (CHECKSUMS_KEY, FIELD_BY_NAME, FIELD_NAMES, FIELDS, REQUIRED_FIELDS,
                     SCHEMA_VERSION, STEP_FIELDS, TENSOR_FIELDS, CacheLayout, FieldKind, FieldSpec,
                     parse_keep_steps, validate_record)
from .fingerprint import canonical_json, diff_fingerprints, fingerprint_digest
from .manifest import Manifest, ShardInfo, list_generations, load_manifest, read_manifest
from .reader import CacheReader
from .store import Store, open_store, split_ref
from .verify import VerifyReport, verify_cache
from .writer import CacheWriter, commit_generation, write_shard
from .operations import OpResult, append, dedup, filter_samples, merge
# ``convert`` is not re-exported: the name would shadow the ``cache_schema.convert`` module.
from .versioning import diff, diff_caches, gc, lineage, list_tags, set_tag

__all__ = [
    "AlreadyExists", "CacheError", "FingerprintMismatch", "GenerationConflict", "IntegrityError",
    "ManifestError", "OperationRefused", "SchemaVersionError", "StoreError", "CHECKSUMS_KEY", "FIELD_BY_NAME",
    "FIELD_NAMES", "FIELDS", "REQUIRED_FIELDS", "SCHEMA_VERSION", "STEP_FIELDS", "TENSOR_FIELDS",
    "CacheLayout", "FieldKind", "FieldSpec", "RecordError", "parse_keep_steps", "validate_record",
    "canonical_json", "diff_fingerprints", "fingerprint_digest", "Manifest", "ShardInfo",
    "list_generations", "load_manifest", "read_manifest", "CacheReader", "Store", "open_store",
    "split_ref", "VerifyReport", "verify_cache", "CacheWriter", "commit_generation",
    "write_shard", "DEFAULT_ENCODING", "Encoding", "encoding_names", "get_encoding",
    "register_encoding", "unregister_encoding", "StepNotStored", "UnknownEncoding", "OpResult", "append", "dedup", "filter_samples", "merge",
    "diff", "diff_caches", "gc", "lineage", "list_tags", "set_tag",
]
