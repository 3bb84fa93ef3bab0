"""`s2dit teacher stage SOURCE --to URL [--revision SHA]`: copy teacher weights once to where
every actor loads them from (teacher_jobs/staging.py)."""

from __future__ import annotations

import argparse
import sys


def _stage(args: argparse.Namespace) -> int:
    from teacher_jobs.staging import describe, stage

    result = stage(args.source, args.to, revision=args.revision,
                   log=lambda line: print(line, file=sys.stderr))
    for line in describe(result):
        print(line)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stage", help="copy teacher weights once (hub id at a commit, or a folder) for actors to load",
        description="Copy a checkpoint folder once to object storage or a shared folder, with a "
                    "digest file (sha256 and size of every file, the revision, the source) "
                    "written last beside it. Jobs whose [job.teacher] sets staged = URL load from "
                    "that copy only: each node downloads and checks it once, and no actor asks "
                    "the hub. Create-only: a URL holding a different copy is refused; the same "
                    "content again is a no-op, and an interrupted copy resumes. A gated hub "
                    "repository reads HF_TOKEN from the environment (never a flag).")
    parser.add_argument("source", metavar="SOURCE",
                        help="hub id (owner/name, downloaded at --revision) or local diffusers folder")
    parser.add_argument("--to", required=True, metavar="URL",
                        help="where the copy goes: s3://bucket/weights/NAME or a shared folder")
    parser.add_argument("--revision", metavar="SHA",
                        help="the 40-hex hub commit (required for a hub id; for a local folder, "
                             "the commit it was downloaded at, inferred inside the hub cache)")
    parser.set_defaults(func=_stage)
