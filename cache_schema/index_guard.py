"""Parse sample-index Parquet bytes this process has not seen before in a child process.

The manifest pins the index's sha256, but a forger who re-signs the manifest re-pins crafted
Parquet, so a cache from someone else reaches pyarrow's C++ reader with hostile bytes; a crash
there (SIGSEGV, abort, a hang, a huge allocation) would take the trainer or `verify` with it.
So bytes whose digest is not yet known are parsed by ``python -I -c CHILD`` under a time and
an address-space bound; the child answers with plain JSON (column names, type names and the
values as lists of str / int; never pickle), which this process type-checks and turns into
the table. A child that dies, runs out of time or memory, or answers anything else is an
IntegrityError naming the index.

Digests this process wrote (``trust``, called by ``write_index``) or that a child has parsed
cleanly are parsed in process afterwards (single-threaded, fully validated): a job or a trainer
pays the child once per index (2 shared cores, load 2.8: 0.37-0.48 s for up to 1000 rows, 1.0 s
for 100k rows, against 1-40 ms in process), a test suite that writes and reads its own caches
not at all. ``S2DIT_INDEX_GUARD=inline`` parses everything in process (for an
operator who only opens caches they wrote).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from .checksum import sha256_bytes
from .errors import IntegrityError

TIME_BOUND_S = 60.0  # plus 2 s per MB of index (a 100k-row index, 1.7 MB: 1.0 s at load 3)
MEMORY_BOUND = 2 * 2**30  # address space of the child, plus 32 bytes per index byte
_SEEN: set[str] = set()  # sha256 of index bytes written here or parsed cleanly by a child

# The child: read Parquet from stdin with pyarrow, single-threaded and fully validated (UTF-8
# of every string), and print {"names", "types", "columns"} or {"error"} as JSON. Its address
# space is bounded before pyarrow is imported. ParquetFile, not read_table: read_table imports
# pyarrow.dataset, which doubled the child's start-up (0.29 s bare import, 0.7 s with it).
CHILD = r"""
import io, json, resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
data = sys.stdin.buffer.read()
try:
    import pyarrow.parquet as pq
    table = pq.ParquetFile(io.BytesIO(data)).read(use_threads=False)
    table.validate(full=True)
    out = {"names": table.schema.names, "types": [str(t) for t in table.schema.types]}
    if out["names"] == sys.argv[2].split(",") and out["types"] == sys.argv[3].split(","):
        out["columns"] = [table.column(i).to_pylist() for i in range(table.num_columns)]
except MemoryError:
    out = {"error": "MemoryError: beyond the parser's memory bound"}
except Exception as exc:
    out = {"error": f"{type(exc).__name__}: {exc}"[:500]}
sys.stdout.write(json.dumps(out))
"""


def trust(data: bytes) -> None:
    """Index bytes this process produced itself: later parses of them need no child."""
    _SEEN.add(sha256_bytes(data))


def _unreadable(where: str, why: str) -> IntegrityError:
    return IntegrityError(f"sample index {where} is not readable Parquet ({why}); run "
                          "`s2dit cache verify`")


def guarded_table(data: bytes, where: str, schema: pa.Schema,
                  inline: Callable[[bytes], pa.Table]) -> pa.Table:
    """The table in ``data``: ``inline(data)`` for known digests, else a child's answer built
    with ``schema`` (the columns' names and types have been checked to be the schema's)."""
    digest = sha256_bytes(data)
    if digest in _SEEN or os.environ.get("S2DIT_INDEX_GUARD") == "inline":
        return inline(data)
    names, types = [f.name for f in schema], [str(f.type) for f in schema]
    done = _run_child(data, names, types, where)
    if done.returncode < 0:
        # A signal may be this machine's doing, not the bytes' (one abort of a valid index seen
        # in a loaded full test run, not reproducible alone): one more child decides. Bytes
        # that crash the parser crash it again and are refused.
        done = _run_child(data, names, types, where)
    if done.returncode != 0:
        how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit code {done.returncode}"
        last = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]  # the child's last words
        raise _unreadable(where, f"the Parquet parser died ({how}) in a guarded child process: "
                                 f"hostile or corrupt bytes{f': {last[0][:200]}' if last else ''}")
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        raise _unreadable(where, "the guarded parser gave no answer") from None
    if "error" in answer:
        raise _unreadable(where, str(answer["error"]))
    if answer.get("names") != names or answer.get("types") != types or "columns" not in answer:
        raise IntegrityError(f"sample index {where} has columns {answer.get('names')} "
                             f"({', '.join(map(str, answer.get('types') or []))}), not the index "
                             f"schema ({', '.join(names)})")
    table = _from_columns(answer["columns"], schema, where)
    _SEEN.add(digest)
    return table


def _run_child(data: bytes, names: list[str], types: list[str],
               where: str) -> subprocess.CompletedProcess:
    """One bounded child parse of ``data``. Its environment holds only what Python and the
    thread count need: no credentials, nothing that changes pyarrow's behaviour."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    try:
        return subprocess.run(
            [sys.executable, "-I", "-c", CHILD, str(MEMORY_BOUND + 32 * len(data)), ",".join(names),
             ",".join(types)], input=data, capture_output=True, check=False,
            timeout=TIME_BOUND_S + 2 * len(data) / 2**20, env={**env, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        raise _unreadable(where, f"the parser gave no answer within {TIME_BOUND_S:.0f} s") from None


def _from_columns(columns: object, schema: pa.Schema, where: str) -> pa.Table:
    """A table from the child's lists, each value checked to be its column's Python type."""
    python = {pa.string(): str, pa.int64(): int}
    if not isinstance(columns, list) or len(columns) != len(schema):
        raise _unreadable(where, "the guarded parser answered malformed columns")
    rows = {len(c) for c in columns if isinstance(c, list)}
    if len(rows) > 1 or not all(isinstance(c, list) for c in columns):
        raise _unreadable(where, "the guarded parser answered columns of different lengths")
    for column, f in zip(columns, schema):
        kind = python[f.type]
        if not all(v is None or (type(v) is kind) for v in column):
            raise _unreadable(where, f"column {f.name} holds values that are not {f.type}")
    try:
        return pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, schema)],
                                    schema=schema)
    except (pa.ArrowException, OverflowError) as exc:
        raise _unreadable(where, f"{type(exc).__name__}: {exc}") from None


def parse_inline(data: bytes) -> pa.Table:
    """Known bytes, in process: single-threaded (pyarrow's reader threads are no use for an
    index of a few MB) and fully validated, so invalid UTF-8 is an ArrowException here."""
    table = pq.ParquetFile(io.BytesIO(data)).read(use_threads=False)
    table.validate(full=True)
    return table
