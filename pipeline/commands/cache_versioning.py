"""`s2dit cache log | tag | diff | gc | append | filter | dedup | merge | convert`: version
caches like code. Every operation commits a new generation (or a new cache); earlier ones stay
readable byte for byte."""

from __future__ import annotations

import argparse
import json
import re

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cache_schema import encoding_names
from cache_schema.codecs import codec_names
from cache_schema.convert import convert
from cache_schema.operations import OpResult, append, dedup, filter_samples, merge, read_id_list
from cache_schema.store import split_ref
from cache_schema.versioning import diff, diff_caches, gc, lineage, list_tags, set_tag
from pipeline.commands.errors import friendly_errors
from pipeline.commands.output import count, fixed, key_values, table, when, wrapping

WHERE_HELP = """\
A new generation that tombstones samples in the sample index; shards are not
rewritten and earlier generations stay readable. Refused (nothing committed) if
it would remove no sample or every live sample.

--exclude-ids FILE   one sample id per line ('#' comments allowed); ids not in
                     the cache are reported, and if none is, refused.
--where EXPR         keep only the samples for which EXPR holds. EXPR is parsed
                     safely (never evaluated as Python) over the index columns
                     sample_id, prompt, seed, shard:
                       comparisons   == != < <= > >=       seed < 100
                       lists         in / not in [...]     shard in ["unit000001"]
                       text          contains startswith endswith (column, "text"),
                                     lower(column)         contains(lower(prompt), "cat")
                       logic         and or not ( )

examples:
  s2dit cache filter s3://b/cache --where 'seed < 100 and not contains(lower(prompt), "ring")'
  s2dit cache filter ./cache --exclude-ids bad_ids.txt
"""

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def parse_duration(text: str) -> float:
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"bad duration {text!r}: use e.g. 30s, 15m, 6h or 7d")
    return float(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def _guard(func):
    return friendly_errors(func, ValueError)


def _log(args):
    rows = lineage(args.url)
    tags = list_tags(args.url)
    if args.json:
        print(json.dumps({"generations": rows, "tags": tags}, indent=1))
        return 0
    Console().print(log_table(split_ref(args.url)[0], rows, tags))
    return 0


def log_table(url: str, rows: list[dict], tags: dict[str, int]) -> Table:
    """``cache log``'s rows for people, newest first: under each operation its arguments ("from"
    first: where the samples came from); a generation with no parent was created, not derived."""
    by_gen: dict[int, list[str]] = {}
    for name, gen in sorted(tags.items()):
        by_gen.setdefault(gen, []).append(name)
    out = table(url, [fixed("gen", right=True), wrapping("tags"), wrapping("operation"),
                      fixed("samples", right=True), fixed("shards", right=True),
                      wrapping("created", len("2026-12-06"))],
                caption=count(len(rows), "generation"))
    for r in rows:
        derived = "" if r["parent"] is None else f" of gen {r['parent']}"
        items = sorted(r["args"].items(), key=lambda kv: kv[0] != "from")
        details = ", ".join(f"{k}={v}" for k, v in items)
        out.add_row(str(r["generation"]), ", ".join(by_gen.get(r["generation"], [])),
                    r["operation"] + derived + (f"\n[dim]{escape(details)}[/dim]" if details else ""),
                    f"{r['samples']:,}", f"{r['shards']:,}", when(r["created_at"]))
    return out


def _tag(args):
    gen = set_tag(args.url, args.name, args.generation)
    print(f"{args.name} -> generation {gen}; read it as {args.url}@{args.name}")
    return 0


def _diff(args):
    if len(args.urls) > 2:
        raise ValueError(f"diff takes one URL (with --from/--to) or two URLs, got {len(args.urls)}")
    if len(args.urls) == 2:
        if args.from_ref or args.to_ref:
            raise ValueError("give two URLs (each may carry @ref) or one URL with --from/--to")
        result = diff_caches(*args.urls)
    elif args.from_ref is None:
        raise ValueError("with one URL, give --from N (and optionally --to M, default newest)")
    else:
        newest = lineage(args.urls[0])[0]["generation"]
        result = diff(args.urls[0], args.from_ref, args.to_ref or newest)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        Console().print(diff_table(args.urls[0] if len(args.urls) == 1 else None, result))
    return 0


def _changes(name: str, lines: list[str]) -> list[tuple[str, str]]:
    """One row per changed key (``key: A -> B``), the name on the first; "unchanged" if none."""
    return [(name if i == 0 else "", line) for i, line in enumerate(lines)] or [(name, "unchanged")]


def _pair(name: str, pair: list, same: str = "") -> tuple[str, str]:
    a, b = pair
    return (name, f"{a} -> {b}" if a != b else (same or str(a)))


def diff_table(url: str | None, result: dict) -> Table:
    """`cache diff` for people: samples added and removed (with a few ids), then what else
    changed between the two generations (fingerprint keys, layout keys, schema, encoding)."""
    where = f"generation {result['from']} -> {result['to']} of {url}" if url else \
        f"{result['from']} -> {result['to']}"
    rows = []
    for what in ("added", "removed"):
        ids = result[f"{what}_ids"][:3]
        more = ", ..." if result[what] > len(ids) else ""
        rows.append((what, count(result[what], "sample") + (f" (e.g. {', '.join(ids)}{more})" if ids else "")))
    rows += [*_changes("fingerprint", result["fingerprint_changes"]),
             *_changes("layout", result["layout_changes"]),
             _pair("schema", result["schema_version"]), _pair("encoding", result["encoding"]),
             _pair("cache id", result["cache_id"], same="same cache")]
    return key_values(f"cache diff: {where}", rows)


def _report(result: OpResult, what: str) -> int:
    if result.manifest is None:
        print(f"nothing to do: {what}; no generation committed")
        return 0
    m = result.manifest
    moved = ""
    if result.copied_shards or result.referenced_shards:
        moved = (f"; {count(result.referenced_shards, 'shard')} referenced in place, "
                 f"{result.copied_shards} copied")
    print(f"generation {m.generation} ({m.operation}): {count(m.num_samples, 'live sample')} in "
          f"{count(len(m.shards), 'shard')}; {result.added} added, {result.removed} removed{moved}")
    if result.unknown_ids:
        print(f"{len(result.unknown_ids)} listed ids are not in the cache, e.g. "
              f"{', '.join(result.unknown_ids[:3])}")
    return 0


def _append(args):
    return _report(append(args.url, args.source), "")


def _filter(args):
    if args.exclude_ids:
        return _report(filter_samples(args.url, exclude_ids=read_id_list(args.exclude_ids),
                                      ids_source=args.exclude_ids), "")
    return _report(filter_samples(args.url, where=args.where), "")


def _dedup(args):
    return _report(dedup(args.url), "no duplicate (normalised prompt, seed) among live samples")


def _merge(args):
    return _report(merge(args.a, args.b, output=args.output), "")


def _convert(args):
    return _report(convert(args.url, to=args.to, output=args.output, codec=args.codec,
                           progress=not args.no_progress), "")


def _gc(args):
    result = gc(args.url, grace_seconds=parse_duration(args.grace), dry_run=args.dry_run,
                allow_short_grace=args.allow_short_grace)
    verb = "would delete" if args.dry_run else "deleted"
    kept = set(result.kept_young) | set(result.kept_leased)
    targets = result.orphans if args.dry_run else result.deleted
    for rel in targets:
        if rel not in kept:
            print(f"{verb} {rel}")
    print(f"{len(result.orphans)} orphans; {len(result.kept_young)} younger than {args.grace} kept; "
          f"{len(result.kept_leased)} kept for {len(result.live_leases)} running writer(s); "
          f"{len(result.deleted)} deleted")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    # the order of `s2dit cache --help`
    for add in (_add_log, _add_tag, _add_diff, _add_append, _add_filter, _add_dedup, _add_merge,
                _add_convert, _add_gc):
        add(subparsers)


def _add_log(subparsers: argparse._SubParsersAction) -> None:
    log = subparsers.add_parser("log", help="lineage of generations, newest first",
                                description="Operation and its arguments, parent, time, "
                                            "samples and producer of every generation, with tags.")
    log.add_argument("url", help="cache URL")
    log.add_argument("--json", action="store_true", help="print JSON")
    log.set_defaults(func=_guard(_log))


def _add_tag(subparsers: argparse._SubParsersAction) -> None:
    tag = subparsers.add_parser("tag", help="name a generation (read it as URL@NAME)",
                                description="Point a tag at a generation (default newest).")
    tag.add_argument("url", help="cache URL")
    tag.add_argument("name", help="tag name (letters, digits, _ - .)")
    tag.add_argument("--generation", type=int, help="generation to tag (default newest)")
    tag.set_defaults(func=_guard(_tag))


def _add_diff(subparsers: argparse._SubParsersAction) -> None:
    df = subparsers.add_parser("diff", help="samples added/removed between two generations",
                               description="Samples added and removed, fingerprint, layout and "
                                           "schema changes: `diff URL --from N [--to M]` within "
                                           "one cache, or `diff URL_A[@ref] URL_B[@ref]` across two.")
    df.add_argument("urls", nargs="+", metavar="URL", help="one cache URL, or two")
    df.add_argument("--from", dest="from_ref", help="generation number or tag")
    df.add_argument("--to", dest="to_ref", help="generation number or tag (default newest)")
    df.add_argument("--json", action="store_true", help="print JSON (at most 20 ids each side)")
    df.set_defaults(func=_guard(_diff))


def _add_append(subparsers: argparse._SubParsersAction) -> None:
    ap = subparsers.add_parser("append", help="add another cache's shards as a new generation",
                               description="A new generation of URL holding its samples plus "
                                           "those of --from (same fingerprint, layout and "
                                           "encoding; a different fingerprint is refused with a "
                                           "diff; a sample already in URL refuses the append). On "
                                           "the same store (one filesystem; for S3 the same "
                                           "bucket and endpoint) nothing is copied: URL then "
                                           "references the other cache's shards and depends on "
                                           "them, so keep that cache (its own gc never deletes "
                                           "them). Across stores they are copied into URL and "
                                           "sha256-checked.")
    ap.add_argument("url", help="cache URL to extend")
    ap.add_argument("--from", dest="source", required=True, help="cache URL[@ref] to add")
    ap.set_defaults(func=_guard(_append))


def _add_filter(subparsers: argparse._SubParsersAction) -> None:
    fl = subparsers.add_parser("filter", help="a new generation without some samples",
                               formatter_class=argparse.RawDescriptionHelpFormatter,
                               description=WHERE_HELP)
    fl.add_argument("url", help="cache URL")
    which = fl.add_mutually_exclusive_group(required=True)
    which.add_argument("--exclude-ids", metavar="FILE", help="file (any fsspec URL) of sample ids, one per line")
    which.add_argument("--where", metavar="EXPR", help="keep only samples where EXPR holds")
    fl.set_defaults(func=_guard(_filter))


def _add_dedup(subparsers: argparse._SubParsersAction) -> None:
    dd = subparsers.add_parser("dedup", help="remove duplicate (prompt, seed) samples",
                               description="A filter generation that tombstones every later "
                                           "sample with the same normalised prompt (NFKC, case- "
                                           "and whitespace-insensitive) and seed; the first in "
                                           "index order stays. Commits nothing when there is no "
                                           "duplicate.")
    dd.add_argument("url", help="cache URL")
    dd.set_defaults(func=_guard(_dedup))


def _add_merge(subparsers: argparse._SubParsersAction) -> None:
    mg = subparsers.add_parser("merge", help="a new cache holding two caches",
                               description="A new cache --output (empty or absent) whose first "
                                           "generation holds the samples of A and B (same "
                                           "fingerprint, layout and encoding; no shared sample "
                                           "ids); tombstoned samples stay tombstoned. Shards on "
                                           "the output's store are referenced where they lie "
                                           "(the output then depends on A and B), others are "
                                           "copied and sha256-checked.")
    mg.add_argument("a", help="first cache URL[@ref]")
    mg.add_argument("b", help="second cache URL[@ref]")
    mg.add_argument("--output", required=True, help="URL of the new (empty) cache")
    mg.set_defaults(func=_guard(_merge))


def _add_convert(subparsers: argparse._SubParsersAction) -> None:
    cv = subparsers.add_parser("convert", help="re-encode a cache: encoding (wds <-> zarr) and/or "
                                               "value codec (raw <-> zstd <-> trajectory)",
                               description="Re-encode the live samples of URL[@ref] into a new "
                                           "cache, one shard per source shard, in another "
                                           "encoding and/or value codec (either way: every "
                                           "codec decodes to the same bits); every tensor's "
                                           "checksum is compared across the conversion before "
                                           "anything is committed. zstd and trajectory are "
                                           "stored by the zarr encoding only.")
    cv.add_argument("url", help="source cache URL[@ref]")
    cv.add_argument("--to", choices=encoding_names(),
                    help="target encoding (default: the source's)")
    cv.add_argument("--codec", choices=codec_names(),
                    help="target value codec: raw (plain arrays), zstd (blosc-zstd, lossless), "
                         "trajectory (residuals against the solver's prediction, lossless); "
                         "default: the source's")
    cv.add_argument("--output", required=True, help="URL of the new (empty) cache")
    cv.add_argument("--no-progress", action="store_true", help="no progress bar")
    cv.set_defaults(func=_guard(_convert))


def _add_gc(subparsers: argparse._SubParsersAction) -> None:
    g = subparsers.add_parser("gc", help="delete objects no generation references",
                              description="Delete shard and index objects that no generation "
                                          "references and that are older than the grace period "
                                          "(e.g. a killed writer's shards), and not younger than "
                                          "the start of a running writer's lease (leases/). Never "
                                          "touches anything a generation references.")
    g.add_argument("url", help="cache URL")
    g.add_argument("--grace", default="24h",
                   help="minimum age of an orphan (default 24h; at least 1h unless "
                        "--allow-short-grace)")
    g.add_argument("--allow-short-grace", action="store_true",
                   help="accept a grace below 1h (only when no writer without a lease, such as "
                        "an older s2dit, may be writing to this cache)")
    g.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    g.set_defaults(func=_guard(_gc))
