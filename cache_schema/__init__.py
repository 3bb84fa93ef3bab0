"""The cache contract between teacher jobs and student training (DESIGN 3).

Imports nothing of the project and no torch, ray or diffusers.
"""

from .encodings import (
                        DEFAULT_ENCODING,
                        Encoding,
                        encoding_names,
                        get_encoding,
                        register_encoding,
                        unregister_encoding,
)
from .errors import (
                        AlreadyExists,
                        CacheError,
                        FingerprintMismatch,
                        GenerationConflict,
                        IntegrityError,
                        ManifestError,
                        NoCache,
                        OperationRefused,
                        RecordError,
                        SchemaVersionError,
                        StepNotStored,
                        StoreError,
                        UnknownEncoding,
)
from .fields import (
                        CAUSAL_CHUNK_KEY,
                        CAUSAL_GROUP,
                        CAUSAL_PAIR_FIELDS,
                        CHECKSUMS_KEY,
                        FIELD_BY_NAME,
                        FIELD_NAMES,
                        FIELDS,
                        REQUIRED_FIELDS,
                        SCHEMA_VERSION,
                        STEP_FIELDS,
                        TENSOR_FIELDS,
                        CacheLayout,
                        FieldKind,
                        FieldSpec,
                        causal_chunk_frames,
                        parse_keep_steps,
                        teacher_digest,
                        validate_record,
)
from .fingerprint import canonical_json, diff_fingerprints, fingerprint_digest
from .lease import WriterLease, writer_lease
from .manifest import Manifest, ShardInfo, list_generations, load_manifest, read_manifest
from .operations import OpResult, append, dedup, filter_samples, merge
from .reader import CacheReader
from .store import Store, open_store, split_ref
from .verify import VerifyReport, verify_cache

# ``convert`` is not re-exported: the name would shadow the ``cache_schema.convert`` module.
from .versioning import diff, diff_caches, gc, lineage, list_tags, set_tag
from .writer import CacheWriter, commit_generation, write_shard

__all__ = [
                        "CAUSAL_CHUNK_KEY",
                        "CAUSAL_GROUP",
                        "CAUSAL_PAIR_FIELDS",
                        "CHECKSUMS_KEY",
                        "DEFAULT_ENCODING",
                        "FIELDS",
                        "FIELD_BY_NAME",
                        "FIELD_NAMES",
                        "REQUIRED_FIELDS",
                        "SCHEMA_VERSION",
                        "STEP_FIELDS",
                        "TENSOR_FIELDS",
                        "AlreadyExists",
                        "CacheError",
                        "CacheLayout",
                        "CacheReader",
                        "CacheWriter",
                        "Encoding",
                        "FieldKind",
                        "FieldSpec",
                        "FingerprintMismatch",
                        "GenerationConflict",
                        "IntegrityError",
                        "Manifest",
                        "ManifestError",
                        "NoCache",
                        "OpResult",
                        "OperationRefused",
                        "RecordError",
                        "SchemaVersionError",
                        "ShardInfo",
                        "StepNotStored",
                        "Store",
                        "StoreError",
                        "UnknownEncoding",
                        "VerifyReport",
                        "WriterLease",
                        "append",
                        "canonical_json",
                        "causal_chunk_frames",
                        "commit_generation",
                        "dedup",
                        "diff",
                        "diff_caches",
                        "diff_fingerprints",
                        "encoding_names",
                        "filter_samples",
                        "fingerprint_digest",
                        "gc",
                        "get_encoding",
                        "lineage",
                        "list_generations",
                        "list_tags",
                        "load_manifest",
                        "merge",
                        "open_store",
                        "parse_keep_steps",
                        "read_manifest",
                        "register_encoding",
                        "set_tag",
                        "split_ref",
                        "teacher_digest",
                        "unregister_encoding",
                        "validate_record",
                        "verify_cache",
                        "write_shard",
                        "writer_lease",
]
