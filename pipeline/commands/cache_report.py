"""`s2dit cache report URL[@ref] --out card.html`: the cache card alone, one self-contained file.

For a platform team that only generates caches: the summary, generations and rejected
prompts, a sample of prompts with their x0 decoded by the cache's own teacher side, per-step
mean/std of the stored states and velocities, and the shard size histogram. Pictures are
inlined (data URIs), so the card is one file to share.
"""

from __future__ import annotations

import argparse


def _cache_report(args: argparse.Namespace) -> int:
    from rich.console import Console

    from cache_schema import open_store
    from cache_schema.manifest import require_generations
    from cache_schema.store import split_ref
    from pipeline.report import cache_card
    from pipeline.report.assets import Assets
    from pipeline.report.html import document, esc, section
    from pipeline.video_io import atomic_output

    if args.prompts < 0 or args.stats_samples < 1:
        raise ValueError("--prompts must be >= 0 and --stats-samples >= 1")
    require_generations(open_store(split_ref(args.url)[0]))  # none: say why (URL, bucket...)
    with Console(stderr=True).status(f"reading {args.url}"):
        body = cache_card(args.url, Assets(None, inline=True) if args.prompts else None,
                          detail=True, preview_prompts=args.prompts, stats_samples=args.stats_samples)
    page = document(f"cache card: {args.url}", f"<h1>Cache card</h1><p class=\"muted\">{esc(args.url)}</p>"
                    + section("Cache", body, section_id="cache"))
    with atomic_output(args.out) as path, open(path, "w", encoding="utf-8") as handle:
        handle.write(page)
    print(f"cache card: {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    card = subparsers.add_parser(
        "report", help="write a cache's card as one self-contained HTML file",
        description="Write the cache card: generations, samples, shards, bytes, encoding, "
                    "fingerprint, rejected prompts with reasons, a sample of prompts with their "
                    "x0 decoded by the cache's own teacher side, per-step mean/std of the stored "
                    "states and velocities, and the shard size histogram.")
    card.add_argument("url", help="cache URL; URL@N or URL@tag picks a generation (default newest)")
    card.add_argument("--out", required=True, metavar="FILE", help="the HTML file to write (any fsspec URL)")
    card.add_argument("--prompts", type=int, default=6,
                      help="distinct prompts to preview (default 6; 0: no previews)")
    card.add_argument("--stats-samples", type=int, default=256, dest="stats_samples",
                      help="samples read for the per-step statistics (default 256)")
    card.set_defaults(func=_cache_report)
