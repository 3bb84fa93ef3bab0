"""`s2dit cache audit URL (--fraction F | --ids FILE)`: regenerate a sample of a cache's records
with its fingerprinted teacher and compare them with the cached bytes (teacher_jobs.audit)."""

from __future__ import annotations

import argparse
import json

from tqdm import tqdm

from cache_schema.operations import read_id_list
from cache_schema.words import count
from pipeline.commands.cache_generate import add_set, parse_sets
from pipeline.commands.errors import friendly_errors
from teacher_jobs.audit import GPU_ATOL, audit_cache
from teacher_jobs.cli_args import add_generate_args, config_from_args, flag_settings

# the [job] keys an audit reads besides the teacher: what its records depend on (shape, stored
# steps, seed) and where its teacher runs; corpus, output and job-runner keys do not apply
AUDIT_KEYS = ("height", "width", "frames", "keep_steps", "seed", "device", "num_gpus_per_actor")


def _audit(args: argparse.Namespace) -> int:
    parse_sets(args)
    # --config: the job's settings as given; else the manifest's recorded config, flags over it
    config = config_from_args(args) if args.config else None
    ids = read_id_list(args.ids) if args.ids else None
    bars: list[tqdm] = []  # drawn once the audit has checked its inputs: a refusal is one line

    def progress(n: int) -> None:
        if not bars:
            bars.append(tqdm(desc="audit", unit="sample", disable=args.json or args.no_progress))
        bars[0].update(n)

    try:
        result = audit_cache(args.url, config, fraction=args.fraction, ids=ids,
                             seed=args.audit_seed, atol=args.atol, settings=flag_settings(args),
                             progress=progress)
    finally:
        for bar in bars:
            bar.close()
    if args.json:
        print(json.dumps(result.to_json(), indent=1))
        return 0 if result.ok else 2
    for mismatch in result.mismatches:
        fields = "; ".join(f"{name}: {how}" for name, how in mismatch.fields.items())
        print(f"MISMATCH sample {mismatch.sample_id} (shard {mismatch.shard}): {fields}")
    for sid in result.missing:
        print(f"MISSING sample {sid}: not regenerated")
    rule = "bit-exact" if result.atol == 0 else f"atol {result.atol:g}"
    print(f"{'OK' if result.ok else 'FAILED'}: {count(result.checked, 'sample')} of generation "
          f"{result.generation} regenerated ({rule}): {result.exact} bit-exact "
          f"({100 * result.exact_fraction:.1f}%), {result.within_tolerance} within tolerance, "
          f"{len(result.mismatches)} differ; teacher {result.teacher_fingerprint[:16]}; "
          f"recorded in {result.record_path}")
    return 0 if result.ok else 2


def register(subparsers: argparse._SubParsersAction) -> None:
    audit = subparsers.add_parser(
        "audit", help="regenerate a sample of records and compare them with the cache",
        description="Rebuild the cache's teacher from the job config its manifest records "
                    "(the generate flags override it; --config FILE replaces it; a cache that "
                    "records none needs the job's settings as flags); its fingerprint must "
                    "equal the manifest's. Regenerate a sample of records from their prompt, seed and "
                    "counter-based noise, and compare every field with the cached bytes: "
                    f"bit-exact on CPU, within --atol on GPU (default {GPU_ATOL:g}). The audit "
                    "(ids, result, teacher fingerprint) is written under audits/ beside the "
                    "manifests; no generation changes. Exit 0 when all match, 2 otherwise.")
    audit.add_argument("url", help="cache URL; URL@N or URL@tag audits that generation")
    which = audit.add_mutually_exclusive_group(required=True)
    which.add_argument("--fraction", type=float, help="audit this fraction of the live samples")
    which.add_argument("--ids", metavar="FILE", help="file (any fsspec URL) of sample ids")
    audit.add_argument("--audit-seed", type=int, default=0, dest="audit_seed",
                       help="seed of the --fraction draw (default 0)")
    audit.add_argument("--atol", type=float,
                       help="tolerance per tensor value (default: 0 on CPU, "
                            f"{GPU_ATOL:g} on GPU)")
    audit.add_argument("--json", action="store_true", help="print the audit as JSON")
    audit.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_generate_args(audit, AUDIT_KEYS)
    add_set(audit)
    audit.set_defaults(func=friendly_errors(_audit))
