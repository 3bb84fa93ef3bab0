"""`s2dit cache log | tag | diff | gc`: version caches like code."""

from __future__ import annotations

import argparse
import datetime
import json
import re

from cache_schema.versioning import diff, gc, lineage, list_tags, set_tag
from pipeline.commands.errors import friendly_errors

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
    by_gen: dict[int, list[str]] = {}
    for name, gen in tags.items():
        by_gen.setdefault(gen, []).append(name)
    for r in rows:
        when = datetime.datetime.fromtimestamp(r["created_at"]).isoformat(timespec="seconds")
        tag = f" ({', '.join(sorted(by_gen[r['generation']]))})" if r["generation"] in by_gen else ""
        print(f"generation {r['generation']}{tag}: {r['operation']} from {r['parent']}, {when}, "
              f"{r['samples']} samples in {r['shards']} shards, {r['producer_version']}")
    return 0


def _tag(args):
    gen = set_tag(args.url, args.name, args.generation)
    print(f"{args.name} -> generation {gen}; read it as {args.url}@{args.name}")
    return 0


def _diff(args):
    print(json.dumps(diff(args.url, args.from_ref, args.to_ref), indent=1))
    return 0


def _gc(args):
    result = gc(args.url, grace_seconds=parse_duration(args.grace), dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    targets = result.orphans if args.dry_run else result.deleted
    for rel in targets:
        if rel not in result.kept_young:
            print(f"{verb} {rel}")
    print(f"{len(result.orphans)} orphans; {len(result.kept_young)} younger than {args.grace} kept; "
          f"{len(result.deleted)} deleted")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    log = subparsers.add_parser("log", help="lineage of generations, newest first",
                                description="Operation, parent, time, samples and producer of "
                                            "every generation, with tags.")
    log.add_argument("url", help="cache URL")
    log.add_argument("--json", action="store_true", help="print JSON")
    log.set_defaults(func=_guard(_log))
    tag = subparsers.add_parser("tag", help="name a generation (read it as URL@NAME)",
                                description="Point a tag at a generation (default newest).")
    tag.add_argument("url", help="cache URL")
    tag.add_argument("name", help="tag name (letters, digits, _ - .)")
    tag.add_argument("--generation", type=int, help="generation to tag (default newest)")
    tag.set_defaults(func=_guard(_tag))
    df = subparsers.add_parser("diff", help="samples added/removed between two generations",
                               description="Samples added and removed, fingerprint and schema changes.")
    df.add_argument("url", help="cache URL")
    df.add_argument("--from", dest="from_ref", required=True, help="generation number or tag")
    df.add_argument("--to", dest="to_ref", required=True, help="generation number or tag")
    df.set_defaults(func=_guard(_diff))
    g = subparsers.add_parser("gc", help="delete objects no generation references",
                              description="Delete shard and index objects that no generation "
                                          "references and that are older than the grace period "
                                          "(e.g. a killed writer's shards). Never touches "
                                          "anything a generation references.")
    g.add_argument("url", help="cache URL")
    g.add_argument("--grace", default="24h", help="minimum age of an orphan (default 24h)")
    g.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    g.set_defaults(func=_guard(_gc))
