"""The logical schema of one cache record (DESIGN 3.1): the single source of field names.

Every other package imports field names, dtypes and shape rules from here. A record is a plain
``dict[str, str | int | np.ndarray]`` keyed by these names; ``validate_record`` checks one against a
``CacheLayout`` and raises ``RecordError`` naming the field and the rule it breaks.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .errors import RecordError, StepNotStored
from .fingerprint import fingerprint_digest

SCHEMA_VERSION = 2  # 2: manifests pin the index (sha256, bytes) and lineage roots

HalfDtype = Literal["float16", "bfloat16"]


class FieldKind(enum.StrEnum):
    TEXT = "text"
    INT = "int"
    TENSOR = "tensor"


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldSpec:
    name: str
    kind: FieldKind
    dtype: str  # numpy dtype name; "half" means the cache's half dtype (CacheLayout.half_dtype)
    axes: tuple[str, ...] = ()  # symbolic: S steps, C channels, F frames, H, W, L tokens, D width
    finite: bool = True  # NaN / Inf refused
    optional: bool = False
    # Optional fields of one group are written together, and only when the job asks for them
    # (``CAUSAL_PAIR_FIELDS``); "" for the fields every record of a teacher job holds.
    group: str = ""
    doc: str = ""

    @property
    def per_step(self) -> bool:
        """True when the first axis is the stored-step axis S (Zarr chunks one step apart)."""
        return bool(self.axes) and self.axes[0] == "S"


LATENT = ("C", "F", "H", "W")
# The field group of the causal ODE pairs (a job writes it, and a size estimate counts it, on request).
CAUSAL_GROUP = "causal"

FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec(name="sample_id", kind=FieldKind.TEXT, dtype="str",
              doc="hash of (normalised prompt, seed, fingerprint)"),
    FieldSpec(name="prompt", kind=FieldKind.TEXT, dtype="str", doc="UTF-8 prompt"),
    FieldSpec(name="negative_prompt", kind=FieldKind.TEXT, dtype="str", doc="UTF-8, may be empty"),
    FieldSpec(name="seed", kind=FieldKind.INT, dtype="int64",
              doc="counter-based RNG key; noise = f(global_seed, sample_id)"),
    FieldSpec(name="noise", kind=FieldKind.TENSOR, dtype="half", axes=LATENT,
              doc="x at sigma = 1, the initial noise state"),
    FieldSpec(name="states", kind=FieldKind.TENSOR, dtype="half", axes=("S", *LATENT),
              doc="trajectory state x_sigma recorded before each kept solver step"),
    FieldSpec(name="sigmas", kind=FieldKind.TENSOR, dtype="float32", axes=("S",),
              doc="sigma of each stored state, after shift"),
    FieldSpec(name="timesteps", kind=FieldKind.TENSOR, dtype="float32", axes=("S",),
              doc="teacher timestep of each stored state"),
    FieldSpec(name="v_cond", kind=FieldKind.TENSOR, dtype="half", axes=("S", *LATENT),
              doc="conditional teacher velocity at each stored state"),
    FieldSpec(name="v_uncond", kind=FieldKind.TENSOR, dtype="half", axes=("S", *LATENT),
              doc="unconditional teacher velocity at each stored state"),
    FieldSpec(name="guidance", kind=FieldKind.TENSOR, dtype="float32", axes=("S",),
              doc="CFG scale used at each stored step"),
    FieldSpec(name="expert", kind=FieldKind.TENSOR, dtype="uint8", axes=("S",),
              doc="teacher expert of each step: 0 high-noise, 1 low-noise"),
    FieldSpec(name="x0", kind=FieldKind.TENSOR, dtype="half", axes=LATENT,
              doc="final clean latent of the trajectory"),
    FieldSpec(name="text_emb", kind=FieldKind.TENSOR, dtype="half", axes=("L", "D"),
              doc="text-encoder output trimmed to the real token count"),
    FieldSpec(name="neg_text_emb", kind=FieldKind.TENSOR, dtype="half", axes=("L", "D"),
              optional=True, doc="negative-prompt text embedding"),
    # Causal ODE pairs (``[job.teacher] causal_chunk_frames = N``, recorded in the fingerprint):
    # the autoregressive teacher's trajectory of each chunk of N frames, conditioned on the
    # record's own clean x0 of the chunks before it and started from the record's own initial
    # noise of that chunk, solved with the teacher's solver on its sigma grid (Causal Forcing,
    # arXiv 2602.02214). The frames of chunk c hold chunk c's ODE; the states sit at ``sigmas``.
    FieldSpec(name="causal_states", kind=FieldKind.TENSOR, dtype="half", axes=("S", *LATENT),
              optional=True, group=CAUSAL_GROUP,
              doc="each chunk's autoregressive-teacher ODE state before each kept step, given "
                  "the clean x0 of the chunks before it"),
    FieldSpec(name="causal_x0", kind=FieldKind.TENSOR, dtype="half", axes=LATENT,
              optional=True, group=CAUSAL_GROUP,
              doc="each chunk's autoregressive-teacher ODE end state (sigma 0)"),
)

FIELD_BY_NAME: dict[str, FieldSpec] = {spec.name: spec for spec in FIELDS}
FIELD_NAMES: tuple[str, ...] = tuple(FIELD_BY_NAME)
STEP_FIELDS: tuple[str, ...] = tuple(s.name for s in FIELDS if s.per_step)
TENSOR_FIELDS: tuple[str, ...] = tuple(s.name for s in FIELDS if s.kind is FieldKind.TENSOR)
REQUIRED_FIELDS: tuple[str, ...] = tuple(s.name for s in FIELDS if not s.optional)
# Written by the writer, never by a producer: {field: checksum} of each tensor's bytes.
CHECKSUMS_KEY = "checksums"
# The causal ODE pairs and the fingerprint key of their chunk size (absent: no pairs).
CAUSAL_PAIR_FIELDS: tuple[str, ...] = tuple(s.name for s in FIELDS if s.group == CAUSAL_GROUP)
CAUSAL_CHUNK_KEY = "causal_chunk_frames"


def causal_chunk_frames(fingerprint: Mapping[str, Any]) -> int:
    """Latent frames per chunk of a cache's causal ODE pairs; 0 when it holds none."""
    return int(fingerprint.get(CAUSAL_CHUNK_KEY, 0) or 0)


def teacher_digest(fingerprint: Mapping[str, Any]) -> str:
    """Digest of the teacher alone: the fingerprint without the keys that only add recorded
    fields (the causal pairs' chunk size). A KD model distilled from a cache without pairs fits
    a cache of the same teacher that has them: its real score describes the same distribution."""
    return fingerprint_digest({k: v for k, v in fingerprint.items() if k != CAUSAL_CHUNK_KEY})


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheLayout:
    """Shapes and dtypes shared by every record of one cache; stored in its manifest."""

    latent_shape: tuple[int, int, int, int]  # (C, F, H, W)
    num_steps: int  # solver steps the teacher ran
    keep_steps: tuple[int, ...]  # indices in [0, num_steps) of the stored states
    text_dim: int
    max_text_len: int
    half_dtype: HalfDtype = "float16"
    # How tensor values are stored (cache_schema/codecs: raw | zstd | trajectory). Left out of
    # the manifest when raw, so raw caches keep the manifests older readers parse.
    codec: str = "raw"

    def __post_init__(self) -> None:
        if len(self.latent_shape) != 4 or min(self.latent_shape) < 1:
            raise ValueError(f"latent_shape must be 4 positive ints (C, F, H, W), got {self.latent_shape}")
        if not self.keep_steps:
            raise ValueError("keep_steps is empty: keep at least one step")
        if list(self.keep_steps) != sorted(set(self.keep_steps)):
            raise ValueError(f"keep_steps must be strictly increasing, got {self.keep_steps}")
        if self.keep_steps[0] < 0 or self.keep_steps[-1] >= self.num_steps:
            raise ValueError(f"keep_steps must lie in [0, {self.num_steps}), got {self.keep_steps}")
        if self.half_dtype not in ("float16", "bfloat16"):
            raise ValueError(f"half_dtype must be float16 or bfloat16, got {self.half_dtype!r}")
        if self.codec != "raw":
            from .codecs.registry import get_codec  # fields is imported by the codecs

            get_codec(self.codec)  # UnknownCodec names the known ones

    @property
    def num_kept(self) -> int:
        return len(self.keep_steps)

    def axis_sizes(self) -> dict[str, int]:
        c, f, h, w = self.latent_shape
        return {"S": self.num_kept, "C": c, "F": f, "H": h, "W": w, "D": self.text_dim}

    def numpy_dtype(self, spec: FieldSpec) -> np.dtype:
        if spec.dtype != "half":
            return np.dtype(spec.dtype)
        if self.half_dtype == "float16":
            return np.dtype(np.float16)
        import ml_dtypes  # optional: numpy has no native bfloat16

        return np.dtype(ml_dtypes.bfloat16)

    def numpy_dtype_of(self, name: str) -> np.dtype:
        return self.numpy_dtype(FIELD_BY_NAME[name])

    def shape_of(self, name: str, text_len: int | None = None) -> tuple[int, ...]:
        """Concrete shape of a tensor field; text fields need their token count."""
        sizes = self.axis_sizes()
        if text_len is not None:
            sizes["L"] = text_len
        return tuple(sizes[a] for a in FIELD_BY_NAME[name].axes)

    def raw_bytes_per_sample(self, text_len: int, groups: tuple[str, ...] = ()) -> int:
        """Bytes of one sample's tensors stored raw, with ``text_len`` tokens (codecs other than
        raw store less: this is their upper bound); field ``groups`` written on request (e.g.
        "causal") are counted only when named."""
        return sum(math.prod(self.shape_of(spec.name, text_len)) * self.numpy_dtype(spec).itemsize
                   for spec in FIELDS if spec.kind is FieldKind.TENSOR
                   and (not spec.group or spec.group in groups))

    def step_position(self, step: int) -> int:
        """Index along S of solver step ``step``; a step that is not stored is an error."""
        try:
            return self.keep_steps.index(step)
        except ValueError:
            raise StepNotStored(
                f"step {step} is not stored in this cache (kept steps: {list(self.keep_steps)}); "
                "regenerate the cache with it in --keep-steps or ask for a stored step"
            ) from None

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["latent_shape"] = list(self.latent_shape)
        out["keep_steps"] = list(self.keep_steps)
        if self.codec == "raw":
            del out["codec"]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CacheLayout:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown cache layout keys {sorted(unknown)}")
        return cls(**{**data, "latent_shape": tuple(data["latent_shape"]),
                      "keep_steps": tuple(data["keep_steps"])})


def parse_keep_steps(spec: str | None, num_steps: int, shift: float | None = None) -> tuple[int, ...]:
    """Resolve a --keep-steps spec to sorted solver-step indices.

    ``all`` (default), ``0,4,8`` (explicit), ``every:K`` (0, K, 2K, ...), ``uniform:N`` (N states
    evenly spread along the trajectory's steps, always including step 0: a student's N-step
    schedule), ``sigma-uniform:N`` (the N states nearest to sigma 1, 1 - 1/N, ..., 1/N on the
    shifted grid ``shift s / (1 + (shift - 1) s)``, s uniform: at a large shift ``uniform:N``
    keeps only high-noise states, Wan's shift 12 and 40 steps give sigma 1.00 ... 0.63 for
    ``uniform:8``; this keeps the low-noise regime supervised too; it needs the teacher's
    ``shift``), and unions of these joined by ``+`` (``uniform:4+sigma-uniform:5``).
    """
    spec = (spec or "all").strip()
    if "+" in spec:
        return tuple(sorted({i for part in spec.split("+")
                             for i in parse_keep_steps(part, num_steps, shift)}))
    if spec == "all":
        return tuple(range(num_steps))
    if spec.startswith("sigma-uniform:") and shift is None:
        raise ValueError(f"keep-steps {spec!r} needs the teacher's shift (its sigma grid)")
    try:
        if spec.startswith("every:"):
            k = int(spec.split(":", 1)[1])
            if k < 1:
                raise ValueError
            return tuple(range(0, num_steps, k))
        if spec.startswith("uniform:"):
            n = int(spec.split(":", 1)[1])
            if not 1 <= n <= num_steps:
                raise ValueError
            return tuple(sorted({round(i * num_steps / n) for i in range(n)}))
        if spec.startswith("sigma-uniform:"):
            n = int(spec.split(":", 1)[1])
            if not 1 <= n <= num_steps:
                raise ValueError
            return _sigma_uniform(n, num_steps, shift)
        steps = tuple(sorted({int(s) for s in spec.split(",") if s.strip()}))
    except ValueError:
        raise ValueError(
            f"bad keep-steps spec {spec!r}: use 'all', 'every:K', 'uniform:N', 'sigma-uniform:N', "
            "a list like '0,4,8', or a union of them joined by '+'"
        ) from None
    if not steps or steps[0] < 0 or steps[-1] >= num_steps:
        raise ValueError(f"keep-steps {spec!r} must name steps in [0, {num_steps})")
    return steps


def _sigma_uniform(n: int, num_steps: int, shift: float | None) -> tuple[int, ...]:
    """For each target sigma 1 - k/n (k = 0..n-1), the step of nearest sigma not yet taken."""
    assert shift is not None
    s = 1.0 - np.arange(num_steps) / num_steps  # the state before step i, unshifted
    sigmas = shift * s / (1 + (shift - 1) * s)  # flow.shift_sigma (DESIGN 4.1)
    taken: set[int] = set()
    for k in range(n):
        order = np.argsort(np.abs(sigmas - (1.0 - k / n)), kind="stable")
        taken.add(next(int(i) for i in order if int(i) not in taken))
    return tuple(sorted(taken))


def _check_text(name: str, value: Any, sample_id: str | None) -> None:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise RecordError(name, "is not valid UTF-8", sample_id=sample_id) from None
    if not isinstance(value, str):
        raise RecordError(name, f"must be str, got {type(value).__name__}", sample_id=sample_id)
    if any(unicodedata.category(ch) == "Cs" for ch in value):
        raise RecordError(name, "contains lone surrogates (not encodable as UTF-8)", sample_id=sample_id)


# IEEE exponent bits by float format: all set means Inf or NaN.
_EXPONENT = {"float16": (np.uint16, 0x7C00), "bfloat16": (np.uint16, 0x7F80),
             "float32": (np.uint32, 0x7F800000), "float64": (np.uint64, 0x7FF0000000000000)}


def all_finite(value: np.ndarray) -> bool:
    """No NaN or Inf, checked on the exponent bits (no float conversion: ~10x faster on fp16)."""
    bits = _EXPONENT.get(value.dtype.name)
    if bits is None or not value.flags.c_contiguous:
        return bool(np.isfinite(value.astype(np.float32, copy=False)).all())
    uint, mask = bits
    exponent = value.view(uint) & uint(mask)
    return not bool((exponent == uint(mask)).any())


def validate_record(record: Mapping[str, Any], layout: CacheLayout) -> None:
    """Raise RecordError unless ``record`` satisfies the schema under ``layout``."""
    sample_id = record.get("sample_id") if isinstance(record.get("sample_id"), str) else None
    for name in record:
        if name not in FIELD_BY_NAME and name != CHECKSUMS_KEY:
            raise RecordError(name, f"is not a schema field (known: {', '.join(FIELD_NAMES)})",
                              sample_id=sample_id)
    for spec in FIELDS:
        if spec.name not in record:
            if spec.optional:
                together = [s.name for s in FIELDS if spec.group and s.group == spec.group
                            and s.name in record]
                if together:
                    raise RecordError(spec.name, f"is missing: the {spec.group} fields come "
                                      f"together and {together[0]} is present",
                                      sample_id=sample_id)
                continue
            raise RecordError(spec.name, "is missing", sample_id=sample_id)
        value = record[spec.name]
        if spec.kind is FieldKind.TEXT:
            _check_text(spec.name, value, sample_id)
            from .bounds import text_problem  # bounds reads the layout of this module

            problem = text_problem(spec.name, value if isinstance(value, str) else value.decode())
            if problem:  # what every reader accepts, refused before a byte is written
                raise RecordError(spec.name, problem, sample_id=sample_id)
            if spec.name == "sample_id" and not value:
                raise RecordError(spec.name, "is empty", sample_id=sample_id)
            continue
        if spec.kind is FieldKind.INT:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise RecordError(spec.name, f"must be an integer, got {type(value).__name__}",
                                  sample_id=sample_id)
            continue
        if not isinstance(value, np.ndarray):
            raise RecordError(spec.name, f"must be a numpy array, got {type(value).__name__}",
                              sample_id=sample_id)
        want_dtype = layout.numpy_dtype(spec)
        if value.dtype != want_dtype:
            raise RecordError(spec.name, f"dtype {value.dtype} != {want_dtype}", sample_id=sample_id)
        text_len = value.shape[0] if spec.axes and spec.axes[0] == "L" and value.ndim else None
        want_shape = layout.shape_of(spec.name, text_len)
        if value.shape != want_shape:
            axes = ",".join(spec.axes)
            raise RecordError(spec.name, f"shape {value.shape} != [{axes}] = {want_shape}",
                              sample_id=sample_id)
        if text_len is not None and not 1 <= text_len <= layout.max_text_len:
            raise RecordError(spec.name, f"token count {text_len} not in [1, {layout.max_text_len}]",
                              sample_id=sample_id)
        floating = value.dtype.kind == "f" or value.dtype.name == "bfloat16"
        if spec.finite and floating and not all_finite(value):
            raise RecordError(spec.name, "contains NaN or Inf", sample_id=sample_id)
