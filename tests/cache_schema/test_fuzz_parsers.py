"""Issue 17: property-based fuzzing of every reader of untrusted cache bytes (tar, .npy, Zarr
metadata, manifest, sample index). Each example must end, within a time and memory bound,
in a result or in the reader's own error type: never a hang, a MemoryError, a TypeError,
RecursionError or SyntaxError traceback.

The default suite tries a few examples per target (seconds); ``-m slow`` runs the same
properties with many more (``FUZZ_EXAMPLES``, default 2000 per target)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import tarfile
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest
from conftest import FINGERPRINT, make_records, small_layout
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cache_schema import CacheWriter, IntegrityError, ManifestError, open_store, read_manifest
from cache_schema.bounds import bounded_stream, parse_npy_header, parse_zarr_meta
from cache_schema.checksum import sha256_bytes
from cache_schema.encodings import get_encoding
from cache_schema.encodings.ustar import member_header, npy_from_bytes
from cache_schema.encodings.wds import iter_shard
from cache_schema.fields import FIELD_NAMES
from cache_schema.fingerprint import canonical_json
from cache_schema.index import check_index, parse_index, read_index
from cache_schema.manifest import Manifest
from cache_schema.writer import prepare_record

FAST = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "2000")), deadline=None,
                derandomize=True, database=None, suppress_health_check=list(HealthCheck))
TIME_BOUND = 3.0  # seconds per example
MEMORY_BOUND = 64 * 2**20  # bytes traced per example (the inputs are a few KB)
LAYOUT = small_layout()
TRIED: dict[str, int] = {}  # inputs tried per target, printed for RELIABILITY.md


class Hang(Exception):
    pass


@contextlib.contextmanager
def _alarm(seconds: float):
    def ring(*_):
        raise Hang(f"no answer within {seconds} s")
    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def traced_peak():
    """Yields a callable giving the bytes traced at peak since entry, beyond what was traced at
    entry. Tracing starts once and is never stopped per example: stopping tracemalloc while
    pyarrow's reader threads run crashed the interpreter (SIGSEGV, with a valid index too:
    the crash the slow index fuzz saw in session 7; tests/cache_schema/test_fuzz_parsers.py::
    test_pyarrow_reads_survive_toggled_tracemalloc)."""
    if not tracemalloc.is_tracing():
        tracemalloc.start()  # never stopped: tests/conftest.py runs this module last
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    yield lambda: tracemalloc.get_traced_memory()[1] - base


def bounded(target: str, run: Callable[[], object], allowed: tuple[type[BaseException], ...]) -> None:
    """``run()`` ends in time, within memory, with a result or an ``allowed`` error."""
    TRIED[target] = TRIED.get(target, 0) + 1
    with traced_peak() as peak:
        try:
            with _alarm(TIME_BOUND):
                run()
        except allowed:
            pass
        assert peak() < MEMORY_BOUND, f"{target}: {peak()} bytes traced"


def _records(n=2):
    records = make_records(LAYOUT, n)
    for record in records:
        prepare_record(record, LAYOUT)
    return records


TAR = get_encoding("wds").encode(_records(), LAYOUT)[""]
WDS_ERRORS = get_encoding("wds").read_errors
with tarfile.open(fileobj=io.BytesIO(TAR)) as _archive:
    SPLICE = _archive.getmembers()[2].offset  # a header boundary inside the first record
NPY = io.BytesIO()
__import__("numpy").save(NPY, __import__("numpy").ones((2, 3), "float16"))
NPY = NPY.getvalue()


# -- tar ---------------------------------------------------------------------------------------
edits = st.lists(st.tuples(st.integers(0, len(TAR) - 1), st.integers(0, 255)), max_size=8)
size_fields = st.one_of(st.integers(0, 8**11 - 1).map(lambda v: b"%011o\0" % v),
                        st.binary(min_size=12, max_size=12))


def _read_tar(data: bytes) -> None:
    stream = bounded_stream(io.BytesIO(data), LAYOUT, "fuzz.tar")
    for _ in iter_shard(stream, LAYOUT, FIELD_NAMES):
        pass


def _with_checksum(header: bytearray) -> bytes:
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def tar_property(flips, member, size, kind, cut):
    """A real shard with bytes flipped, a crafted member (any size field, any type, a valid
    header checksum so the parser goes on) spliced in, and cut anywhere."""
    data = bytearray(TAR)
    for pos, value in flips:
        data[pos] = value
    header = bytearray(member_header(member, 0))
    header[124:136], header[156:157] = size, kind
    data = bytes(data[:SPLICE]) + _with_checksum(header) + bytes(data[SPLICE:])
    bounded("tar", lambda: _read_tar(data[:cut] if cut else data), WDS_ERRORS)


tar_args = {"flips": edits, "member": st.sampled_from(["x.states.npy", "x.meta.json", "x.prompt.txt",
                                                     "././@PaxHeader"]),
                "size": size_fields, "kind": st.sampled_from([b"0", b"x", b"L", b"5", b"S", b"\xff"]),
                "cut": st.integers(0, len(TAR) + 512)}


@FAST
@given(**tar_args)
def test_fuzz_tar(**kw):
    tar_property(**kw)


@pytest.mark.slow
@SLOW
@given(**tar_args)
def test_fuzz_tar_slow(**kw):
    tar_property(**kw)


def test_tar_member_beyond_the_layout_is_refused_naming_it():
    data = bytearray(TAR)
    header = bytearray(member_header("big.states.npy", 0))
    header[124:136] = b"%011o\0" % (8**11 - 1)  # 8 GiB claimed
    data = bytes(data[:SPLICE]) + _with_checksum(header) + bytes(data[SPLICE:])
    with pytest.raises(ValueError, match=r"'big.states.npy' claims 8589934591 bytes"):
        _read_tar(data)


def test_pax_record_of_length_zero_ends():
    body = b"0 path=x\n"
    header = bytearray(member_header("././@PaxHeader", len(body)))
    header[156:157] = b"x"
    data = _with_checksum(header) + body + b"\0" * (512 - len(body)) + TAR
    with _alarm(TIME_BOUND), pytest.raises(ValueError, match="bad length 0"):
        _read_tar(data)


# -- npy ---------------------------------------------------------------------------------------
literal = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
                       lambda inner: st.one_of(st.lists(inner, max_size=4),
                                               st.tuples(inner, inner),
                                               st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                       max_leaves=20)
headers = st.one_of(
    literal.map(repr),
    st.builds(lambda d, s, f: repr({"descr": d, "fortran_order": f, "shape": s}),
              st.sampled_from(["<f2", "<f4", "|u1", "|O", "<U3", "V8", "<f2x", ""]),
              st.one_of(st.tuples(*[st.integers(-2, 2**62)] * 3), st.tuples(), literal), literal),
    st.integers(1, 20000).map(lambda n: "[" * n + "]" * n),  # deep nesting
    st.text(max_size=200),
)


def npy_property(header: str, payload: bytes, version: int):
    raw = header.encode("latin1", "replace")
    size = len(raw).to_bytes(2 if version == 1 else 4, "little")
    data = b"\x93NUMPY" + bytes([version, 0]) + size + raw + payload
    bounded("npy", lambda: npy_from_bytes(data), (ValueError,))


npy_args = {"header": headers, "payload": st.binary(max_size=64), "version": st.sampled_from([1, 2, 3, 9])}


@settings(FAST, max_examples=8)  # deeply nested headers take seconds each: 20 took 88 s
@given(**npy_args)
def test_fuzz_npy(**kw):
    npy_property(**kw)


@pytest.mark.slow
@SLOW
@given(**npy_args)
def test_fuzz_npy_slow(**kw):
    npy_property(**kw)


def test_a_deeply_nested_npy_header_is_refused_before_the_literal_parser():
    with _alarm(TIME_BOUND), pytest.raises(ValueError, match="nests brackets deeper than 16"):
        parse_npy_header(b"[" * 2000 + b"]" * 2000)  # took ast.literal_eval seconds
    nested = np.zeros(2, dtype=[("a", "<f4", (2, 3)), ("b", "<i2", (2,))])
    buffer = io.BytesIO()
    np.save(buffer, nested)  # the deepest form the parser takes (sub-array fields) still parses
    assert npy_from_bytes(buffer.getvalue()).dtype == nested.dtype


# -- zarr metadata -----------------------------------------------------------------------------
def _zarr_meta() -> dict[str, bytes]:
    objects = get_encoding("zarr").encode(_records(), LAYOUT)
    return {key: data for key, data in objects.items() if key.endswith("zarr.json")}


ZARR_META = _zarr_meta()
json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                                     st.text(max_size=6)),
                           lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.text(max_size=6), inner,
                                                                   max_size=4)), max_leaves=20)


def zarr_property(key: str, shape, replace, value):
    meta = json.loads(ZARR_META[key])
    if shape is not None:
        meta["shape"] = shape
    if replace is not None:
        meta[replace] = value
    data = json.dumps(meta).encode()
    name = key.removesuffix("zarr.json").rstrip("/")
    bounded("zarr metadata", lambda: parse_zarr_meta(data, name, LAYOUT, "fuzz.zarr"), (ValueError,))


zarr_args = {"key": st.sampled_from(sorted(ZARR_META)),
                 "shape": st.one_of(st.none(), st.lists(st.integers(-1, 2**50), max_size=9), json_values),
                 "replace": st.one_of(st.none(), st.sampled_from(["chunk_grid", "data_type", "node_type",
                                                               "codecs", "shape"])),
                 "value": json_values}


@FAST
@given(**zarr_args)
def test_fuzz_zarr_metadata(**kw):
    zarr_property(**kw)


@pytest.mark.slow
@SLOW
@given(**zarr_args)
def test_fuzz_zarr_metadata_slow(**kw):
    zarr_property(**kw)


def test_zarr_array_with_an_absurd_shape_is_refused_before_allocating(tmp_path):
    url = str(tmp_path / "z")
    with CacheWriter(url, layout=LAYOUT, fingerprint=FINGERPRINT, encoding="zarr",
                     samples_per_shard=2) as writer:
        for record in make_records(LAYOUT, 2):
            writer.write(record)
    shard = read_manifest(open_store(url), 1).shards[0]
    meta_path = tmp_path / "z" / shard.path / "states" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["shape"] = [2**40, *meta["shape"][1:]]  # terabytes
    meta_path.write_text(json.dumps(meta))
    from cache_schema import CacheReader

    with traced_peak() as peak, _alarm(TIME_BOUND), pytest.raises(
            IntegrityError, match=r"zarr array 'states' has shape"):
        list(CacheReader(url).iter_records())
    assert peak() < MEMORY_BOUND


# -- manifest ----------------------------------------------------------------------------------
def _manifest_bytes(tmp_root) -> bytes:
    url = str(tmp_root)
    with CacheWriter(url, layout=LAYOUT, fingerprint=FINGERPRINT, samples_per_shard=2) as writer:
        for record in make_records(LAYOUT, 4):
            writer.write(record)
    store = open_store(url)
    return store.read_bytes("manifests/000001.json"), store.read_bytes(
        read_manifest(store, 1).index_path), read_manifest(store, 1)


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory):
    return _manifest_bytes(tmp_path_factory.mktemp("fuzz") / "c")


KEYS = ["schema_version", "generation", "shards", "index_path", "index_sha256", "index_bytes",
        "layout", "lineage", "num_samples", "encoding", "fingerprint", "extra", "cache_id"]
SHARD_KEYS = ["name", "path", "root", "bytes", "samples", "sha256", "encoding", "extra"]


def manifest_property(manifest: bytes, key, value, shard_key, shard_value, resign, flip):
    body = json.loads(manifest)
    body.pop("body_sha256")
    if key is not None:
        body[key] = value
    if shard_key is not None and isinstance(body.get("shards"), list) and body["shards"] and \
            isinstance(body["shards"][0], dict):
        body["shards"][0][shard_key] = shard_value
    if resign:  # a forger recomputes the checksum, so the content checks are reached
        with contextlib.suppress(TypeError, ValueError):
            body["body_sha256"] = sha256_bytes(canonical_json(body).encode())
    data = json.dumps(body).encode()
    if flip is not None:
        data = data[:flip % len(data)] + b"\xff" + data[flip % len(data) + 1:]
    bounded("manifest", lambda: Manifest.from_bytes(data, where="fuzz"), (ManifestError,))


manifest_args = {"key": st.one_of(st.none(), st.sampled_from(KEYS)), "value": json_values,
                     "shard_key": st.one_of(st.none(), st.sampled_from(SHARD_KEYS)),
                     "shard_value": st.one_of(json_values, st.sampled_from(
                         ["../x", "/etc/passwd", "shards/../../x", "s3://b/x", "shards/a\\b", "."])),
                     "resign": st.booleans(), "flip": st.one_of(st.none(), st.integers(0, 10**6))}


@FAST
@given(**manifest_args)
def test_fuzz_manifest(real_cache, **kw):
    manifest_property(real_cache[0], **kw)


@pytest.mark.slow
@SLOW
@given(**manifest_args)
def test_fuzz_manifest_slow(real_cache, **kw):
    manifest_property(real_cache[0], **kw)


# -- index -------------------------------------------------------------------------------------
def _mutated(index: bytes, flips, cut) -> bytes:
    data = bytearray(index)
    for pos, value in flips:
        data[pos % len(data)] = value
    return bytes(data[:cut]) if cut else bytes(data)


def index_property(index: bytes, manifest, flips, cut, *, guard: bool):
    """A forger who re-pins crafted Parquet reaches the parser: through the guard (bytes never
    seen before go to a bounded child process) or in process (S2DIT_INDEX_GUARD=inline)."""
    data = _mutated(index, flips, cut)

    def run():
        check_index(parse_index(data, "fuzz.parquet"), manifest, "fuzz.parquet")
    with _guard_mode(guard):
        bounded("index (guarded child)" if guard else "index (in process)", run, (IntegrityError,))


@contextlib.contextmanager
def _guard_mode(guard: bool):
    previous = os.environ.pop("S2DIT_INDEX_GUARD", None)
    if not guard:
        os.environ["S2DIT_INDEX_GUARD"] = "inline"
    try:
        yield
    finally:
        os.environ.pop("S2DIT_INDEX_GUARD", None)
        if previous is not None:
            os.environ["S2DIT_INDEX_GUARD"] = previous


index_args = {"flips": st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
                  "cut": st.integers(0, 4096)}
GUARDED = settings(FAST, max_examples=4)  # a child process per example (about 0.3 s)
GUARDED_SLOW = settings(SLOW, max_examples=max(1, SLOW.max_examples // 10))


@FAST
@given(**index_args)
def test_fuzz_index(real_cache, **kw):
    index_property(real_cache[1], real_cache[2], **kw, guard=False)


@GUARDED
@given(**index_args)
def test_fuzz_index_guarded(real_cache, **kw):
    index_property(real_cache[1], real_cache[2], **kw, guard=True)


@pytest.mark.slow
@SLOW
@given(**index_args)
def test_fuzz_index_direct_slow(real_cache, **kw):
    index_property(real_cache[1], real_cache[2], **kw, guard=False)


@pytest.mark.slow
@GUARDED_SLOW
@given(**index_args)
def test_fuzz_index_guarded_slow(real_cache, **kw):
    index_property(real_cache[1], real_cache[2], **kw, guard=True)


def pinned_index_property(index: bytes, manifest, tmp_root, flips, cut):
    """The reader's own path: bytes that differ from the pin are refused before Parquet."""
    data = _mutated(index, flips, cut)
    store = open_store(str(tmp_root))
    path = store.path(manifest.index_path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    bounded("index (pinned)", lambda: read_index(store, manifest), (IntegrityError,))


@pytest.mark.slow
@SLOW
@given(**index_args)
def test_fuzz_index_slow(real_cache, tmp_path_factory, **kw):
    pinned_index_property(real_cache[1], real_cache[2], tmp_path_factory.getbasetemp() / "pin",
                          **kw)


@FAST
@given(**index_args)
def test_fuzz_index_pinned(real_cache, tmp_path_factory, **kw):
    pinned_index_property(real_cache[1], real_cache[2], tmp_path_factory.getbasetemp() / "pin",
                          **kw)


def test_invalid_utf8_in_the_index_is_an_integrity_error(real_cache):
    """Found by the fuzz (direct, 20000 inputs): a flipped byte inside a prompt gave invalid
    UTF-8 that Parquet reads and ``to_pylist`` refuses with UnicodeDecodeError; both parse
    paths validate the table fully and say IntegrityError."""
    index = real_cache[1]
    at = index.index(b"prompt 0")
    data = index[:at] + b"\xc3" + index[at + 1:]
    for guard in (False, True):
        with _guard_mode(guard), pytest.raises(IntegrityError, match="UTF8"):
            parse_index(data, "utf8.parquet")


@pytest.mark.parametrize("child,message", [
    ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", r"died \(signal 11\)"),
    ("import os; os.abort()", r"died \(signal 6\)"),
    ("import time; time.sleep(30)", "no answer within"),
    (("import resource, sys; n = int(sys.argv[1]); "
     "resource.setrlimit(resource.RLIMIT_AS, (n, n)); x = bytearray(2 * n)"), r"died \(exit code 1\)"),
    ("print('not json')", "gave no answer"),
    (("import json; print(json.dumps({'names': ['sample_id', 'shard', 'offset', 'prompt', 'seed', "
     "'status'], 'types': ['string', 'string', 'int64', 'string', 'int64', 'string'], "
     "'columns': [['a'], ['s'], ['1'], ['p'], [1], ['ok']]}))"), "column offset holds values"),
])
def test_a_parser_that_dies_hangs_or_lies_is_an_integrity_error_naming_the_index(
        child, message, monkeypatch):
    """The guard's contract, with the child replaced by one that crashes, hangs, runs out of
    memory or answers garbage: one IntegrityError naming the index, this process intact."""
    from cache_schema import index_guard

    monkeypatch.setattr(index_guard, "CHILD", child)
    monkeypatch.setattr(index_guard, "TIME_BOUND_S", 2.0)
    with pytest.raises(IntegrityError, match=message) as caught:
        parse_index(os.urandom(64), "s3://bucket/cache/index/000001.parquet")
    assert "sample index s3://bucket/cache/index/000001.parquet" in str(caught.value)


def test_unseen_index_bytes_are_parsed_in_a_child_and_known_ones_in_process(real_cache, monkeypatch):
    """Bytes this process wrote are trusted (no child); bytes new to it go to the child once,
    then in process; both give the same table as pyarrow itself."""
    import pyarrow.parquet as pq

    from cache_schema import index_guard

    spawned = []
    real_run = index_guard.subprocess.run
    monkeypatch.setattr(index_guard.subprocess, "run", lambda *a, **k: spawned.append(1) or real_run(*a, **k))
    index = real_cache[1]
    parse_index(index, "own")  # the fixture wrote it in this process
    assert spawned == []
    index_guard._SEEN.discard(index_guard.sha256_bytes(index))  # as if another process wrote it
    table = parse_index(index, "foreign")
    again = parse_index(index, "foreign again")
    assert spawned == [1]
    assert table.equals(pq.read_table(io.BytesIO(index)).cast(table.schema)) and again.equals(table)


@pytest.mark.slow
def test_pyarrow_reads_survive_toggled_tracemalloc(real_cache, tmp_path):
    """The session-7 crash, reproduced: tracemalloc started and stopped around each of a few
    thousand threaded pyarrow reads of the (valid) index crashed with SIGSEGV within ~1500
    reads; the index's own parse path (single-threaded) survives the same loop."""
    import subprocess
    import sys

    (tmp_path / "index.parquet").write_bytes(real_cache[1])
    loop = ("import io, sys, tracemalloc; sys.path.insert(0, {root!r})\n"
            "from cache_schema.index_guard import parse_inline\n"
            "data = open({path!r}, 'rb').read()\n"
            "for _ in range(5000):\n"
            "    tracemalloc.start(); parse_inline(data).column(3).to_pylist(); tracemalloc.stop()\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-c", loop.format(root=root, path=str(tmp_path / "index.parquet"))],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def teardown_module():
    print(f"\nfuzz inputs tried per target: {json.dumps(TRIED, sort_keys=True)}")
