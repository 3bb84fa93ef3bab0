"""`s2dit report RUN_DIR [--out FILE] [--serve [--port N]]`: the HTML report of a run folder,
finished or not; ``--serve`` then serves it on loopback (pipeline/report/serve.py)."""

from __future__ import annotations

import argparse

from .output import working


def _report(args: argparse.Namespace) -> int:
    from pipeline.report import write_report
    from pipeline.report.run_folder import RunFolder

    run = RunFolder(args.run_dir)
    if not run.fs.isdir(run.root):
        raise FileNotFoundError(f"run folder {args.run_dir} does not exist; pass the --out folder of "
                                "`s2dit run` (or of `s2dit demo`)")
    with working("report") as step:  # 15-20 s on the demo: say which section it is at
        path = write_report(args.run_dir, out=args.out, progress=step)
    print(f"report: {path}")
    if args.serve:
        from pipeline.report.serve import serve

        serve(path, args.port, ready=lambda address: print(
            f"serving {path.rsplit('/', 1)[0]} at {address} (Ctrl-C stops)", flush=True))
        print("stopped")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser(
        "report", help="write the HTML report of a run folder (finished, partial or failed)",
        description="Write one HTML page of what a run produced: its config, stage statuses and "
                    "timings, the cache card, both stages' training curves, the oracle's quality "
                    "table, and each stage's videos side by side (analytic teacher). Stages that "
                    "have not run show as pending. Assets go in report_assets/ beside the page "
                    "(FILE_assets/ with --out).")
    report.add_argument("run_dir", metavar="RUN_DIR", help="run folder or fsspec URL (s2dit run --out)")
    report.add_argument("--out", metavar="FILE", help="where to write the page (default RUN_DIR/report.html)")
    report.add_argument("--serve", action="store_true",
                        help="then serve the page's folder on 127.0.0.1 (read through fsspec: a "
                             "report on S3 too) and print its address; Ctrl-C stops")
    report.add_argument("--port", type=int, default=0,
                        help="port of --serve (default 0: a free one)")
    report.set_defaults(func=_report)
