"""`s2dit cache ls | show | verify`: look at a cache without changing it."""

from __future__ import annotations

import argparse
import datetime
import json

from rich.console import Console
from rich.table import Table

from cache_schema import CacheError, CacheReader, open_store, read_manifest
from cache_schema.manifest import require_generations, resolve_generation
from cache_schema.store import absolute_url, split_ref
from cache_schema.verify import verify_cache
from cache_schema.versioning import list_tags
from pipeline.commands.errors import friendly_errors
from pipeline.commands.output import count, fixed, size, table, when, wrapping


def _ls(args: argparse.Namespace) -> int:
    if args.shards:
        return _shard_urls(args)
    base, _ = split_ref(args.url)
    store = open_store(base)
    generations = require_generations(store)  # none: why (endpoint, bucket, path, no commit)
    tags: dict[int, list[str]] = {}
    for name, gen in sorted(list_tags(base).items()):
        tags.setdefault(gen, []).append(name)
    rows = []
    for gen in generations:
        try:
            m = read_manifest(store, gen)
        except CacheError as exc:
            rows.append({"generation": gen, "tags": tags.get(gen, []), "error": str(exc)})
            continue
        rows.append({"generation": gen, "tags": tags.get(gen, []), "operation": m.operation,
                     "parent": m.parent, "samples": m.num_samples, "shards": len(m.shards),
                     "encoding": m.encoding, "codec": m.layout.codec, "bytes": m.total_bytes,
                     "fingerprint": m.fingerprint_digest[:16],
                     "created": datetime.datetime.fromtimestamp(m.created_at).isoformat(timespec="seconds")})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    Console().print(ls_table(store.url, rows))
    return 0


def _shard_urls(args: argparse.Namespace) -> int:
    """The committed shard URLs of a generation (URL@N or URL@tag; else the newest), one a
    line, for other readers (stock webdataset over a wds cache); local paths absolute."""
    reader = CacheReader(args.url)
    rows = [{"url": absolute_url(reader.store_for(s).url_of(s.path)), "samples": s.samples,
             "bytes": s.bytes, "encoding": s.encoding, "sha256": s.sha256} for s in reader.shards]
    print(json.dumps(rows, indent=1) if args.json else "\n".join(r["url"] for r in rows))
    return 0


def ls_table(url: str, rows: list[dict]) -> Table:
    """``cache ls``'s rows for people: one line per generation, newest last; the fingerprint
    (one per cache unless a generation differs) in the caption; shard counts in ``cache log``
    and ``--json``."""
    fingerprints = sorted({r["fingerprint"] for r in rows if "fingerprint" in r})
    notes = [count(len(rows), "generation")]
    if len(fingerprints) == 1:
        notes.append(f"teacher fingerprint {fingerprints[0]}")
    notes += [f"generation {r['generation']} is unreadable: {r['error']}" for r in rows if "error" in r]
    columns = [fixed("gen", right=True), wrapping("tags"), wrapping("operation"),
               fixed("samples", right=True), fixed("size", right=True),
               fixed("format"), wrapping("created", len("2026-12-06"))]
    if len(fingerprints) > 1:
        columns.append(fixed("fingerprint"))
    out = table(url, columns, caption="; ".join(notes))
    for r in rows:
        tags = ", ".join(r["tags"])
        if "error" in r:
            out.add_row(str(r["generation"]), tags, "unreadable")
            continue
        cells = [str(r["generation"]), tags, r["operation"], f"{r['samples']:,}", size(r["bytes"]), f"{r['encoding']}/{r['codec']}",
                 when(datetime.datetime.fromisoformat(r["created"]))]
        out.add_row(*cells, *([r["fingerprint"]] if len(fingerprints) > 1 else []))
    return out


def _show(args: argparse.Namespace) -> int:
    base, ref = split_ref(args.url)
    store = open_store(base)
    manifest = read_manifest(store, resolve_generation(
        store, args.generation if args.generation is not None else ref))
    print(json.dumps(manifest.body(), indent=1, ensure_ascii=False))
    return 0


def _verify(args: argparse.Namespace) -> int:
    require_generations(open_store(split_ref(args.url)[0]))  # nothing to verify: say why
    report = verify_cache(args.url, deep=args.deep)
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        for problem in report.problems:
            print(f"CORRUPT {problem}")
        for warning in report.warnings:
            print(f"WARNING {warning}")
        state = "OK" if report.ok else f"FAILED ({len(report.problems)} problems)"
        print(f"{state}: generation {report.generation}, {count(report.checked_shards, 'shard')}, "
              "index " + ("pinned" if not report.warnings else "unpinned (schema 1)")
              + (f", {count(report.checked_samples, 'sample')} "
                 f"({count(report.checked_fields, 'field')}) checksummed" if args.deep else ""))
    return 0 if report.ok else 2


def _guard(func):
    return friendly_errors(func)


def register(subparsers: argparse._SubParsersAction) -> None:
    ls = subparsers.add_parser("ls", help="list generations of a cache",
                               description="List every generation: tags, operation, samples, "
                                           "size, encoding/codec, time, and the teacher "
                                           "fingerprint's digest; --json for machines (bytes, "
                                           "ISO times).")
    ls.add_argument("url", help="cache folder or fsspec URL (s3://bucket/cache)")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.add_argument("--shards", action="store_true",
                    help="print the committed shard URLs of a generation instead (URL@N or "
                         "URL@tag; default the newest), one a line (--json: with samples, bytes, "
                         "encoding, sha256), e.g. for stock webdataset")
    ls.set_defaults(func=_guard(_ls))

    show = subparsers.add_parser("show", help="print a manifest",
                                 description="Print the manifest of a generation as JSON.")
    show.add_argument("url", help="cache URL; URL@N or URL@tag pins a generation")
    show.add_argument("--generation", type=int, help="generation number (default: newest)")
    show.set_defaults(func=_guard(_show))

    verify = subparsers.add_parser(
        "verify", help="check a cache is intact (exit 0) or name what is corrupt (exit 2)",
        description="Check every manifest's checksum and paths (inside the cache root, no shard "
                    "twice), the sample index against the sha256 its manifest pins, and every "
                    "shard's presence and size; with --deep also every shard's sha256 and every "
                    "record field's checksum (tensors, text, ids) against the index.")
    verify.add_argument("url", help="cache URL; URL@N or URL@tag verifies that generation")
    verify.add_argument("--deep", action="store_true", help="re-hash all bytes (reads everything)")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(func=_guard(_verify))
