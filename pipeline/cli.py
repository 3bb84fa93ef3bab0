"""The ``s2dit`` command line: a thin dispatcher over command modules.

Each module in ``pipeline.commands`` owns one group of subcommands and exposes
``register(subparsers)``; ``cache`` subcommands come from several modules (inspection,
versioning, generation) that all register into the one ``s2dit cache`` group.

Command modules import torch, Ray and the cache library (seconds on a busy machine), so ``main``
imports only the module of the command it runs: every other command is a placeholder carrying
its help line from ``COMMANDS`` (``s2dit --help`` imports none). A test keeps ``COMMANDS`` equal
to what the modules register.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Sequence

# (group, command, module, help): group None is top level; one module may register several.
COMMANDS: tuple[tuple[str | None, str, str, str], ...] = (
    ("cache", "ls", "cache_inspect", "list generations of a cache"),
    ("cache", "show", "cache_inspect", "print a manifest"),
    ("cache", "verify", "cache_inspect",
     "check a cache is intact (exit 0) or name what is corrupt (exit 2)"),
    ("cache", "log", "cache_versioning", "lineage of generations, newest first"),
    ("cache", "tag", "cache_versioning", "name a generation (read it as URL@NAME)"),
    ("cache", "diff", "cache_versioning", "samples added/removed between two generations"),
    ("cache", "append", "cache_versioning", "add another cache's shards as a new generation"),
    ("cache", "filter", "cache_versioning", "a new generation without some samples"),
    ("cache", "dedup", "cache_versioning", "remove duplicate (prompt, seed) samples"),
    ("cache", "merge", "cache_versioning", "a new cache holding two caches"),
    ("cache", "convert", "cache_versioning", ("re-encode a cache: encoding (wds <-> zarr) and/or "
                                              "value codec (raw <-> zstd <-> trajectory)")),
    ("cache", "gc", "cache_versioning", "delete objects no generation references"),
    ("cache", "generate", "cache_generate",
     "run the teacher over a prompt corpus into a versioned cache (Ray)"),
    ("cache", "estimate", "cache_estimate", "bytes per sample and total for a job config"),
    ("cache", "report", "cache_report", "write a cache's card as one self-contained HTML file"),
    ("cache", "audit", "cache_audit",
     "regenerate a sample of records and compare them with the cache"),
    ("teacher", "stage", "teacher_stage",
     "copy teacher weights once (hub id at a commit, or a folder) for actors to load"),
    (None, "profile", "model",
     "measure latency and peak memory of each block kind/stride -> lut.json"),
    (None, "search", "model", "budget-aware DP: best sandwich layout under latency/memory budgets"),
    (None, "export", "model", "torch.export the streaming chunk step and check it against eager"),
    (None, "train", "train", "train the student from a frozen cache"),
    (None, "eval", "train", "score a checkpoint with the analytic teacher"),
    (None, "sample", "train", "text to video: sample a student checkpoint for prompts"),
    (None, "demo", "demo", ("end to end on the analytic teacher: cache (Ray) -> verify -> tag -> "
                            "S2DiT-KD -> S2DiT-AR -> scores -> videos -> report.html")),
    (None, "run", "run", ("the whole pipeline (cache -> train -> evaluate -> sample -> report) "
                          "from one config, resumable")),
    (None, "report", "report", "write the HTML report of a run folder (finished, partial or failed)"),
)

GROUP_HELP = {
    "cache": "inspect, verify, version and generate teacher caches",
    "teacher": "stage teacher weights where the cache job's actors load them",
}
PACKAGE = "pipeline.commands"
# Option values that may look like URLs but name no storage (ray://HEAD:10001, a prompt's text)
NOT_STORAGE = {"ray_address", "prompt"}
DISTRIBUTION = "s2dit"  # pyproject.toml's [project] name


# Exit codes besides 0 (success) and 1 (a command's own "no" answer, e.g. units of a cache job failed)
EXIT_CODES = {2: "bad input (one `error:` line says what, and what to do; usage errors too)",
              130: "interrupted (Ctrl-C: rerun the same command to resume)",
              141: "the reader of the output went away (`| head`)"}


class Parser(argparse.ArgumentParser):
    """A command's unknown option is reported by that command (its usage, and the closest of its
    options), not by ``s2dit`` with the top-level usage as argparse does."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and self._subparsers is None:  # a leaf command: nobody below to take them
            hints = [self.did_you_mean(a) for a in extras if a.startswith("-")]
            self.error(f"unrecognized arguments: {' '.join(extras)}"
                       + "".join(f" ({h})" for h in hints if h))
        return namespace, extras

    def _check_value(self, action: argparse.Action, value: object) -> None:
        # argparse's hook for a value outside ``choices`` (a mistyped command or choice)
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as exc:
            close = difflib.get_close_matches(str(value), [str(c) for c in action.choices or ()], n=1)
            if not close:
                raise
            raise argparse.ArgumentError(action, f"{exc.message} (did you mean {close[0]!r}?)") from None

    def did_you_mean(self, arg: str) -> str:
        close = difflib.get_close_matches(arg.split("=", 1)[0],
                                          [o for o in self._option_string_actions if o.startswith("--")],
                                          n=1, cutoff=0.6)
        return f"did you mean {close[0]}?" if close else ""


def _placeholder(args: argparse.Namespace) -> int:
    raise AssertionError("a placeholder command ran: main() parses again with the full parser")


def modules_for(argv: Sequence[str]) -> list[str]:
    """The command modules ``argv`` needs: the one registering the command it names (the
    top-level parser and the groups take no option values, so the first one or two words that
    are not options name the command); none for ``s2dit --help`` or ``s2dit cache --help``."""
    words = [a for a in argv if not a.startswith("-")][:2]
    if not words:
        return []
    group = words[0] if words[0] in GROUP_HELP else None
    name = words[1] if group and len(words) > 1 else (None if group else words[0])
    return sorted({m for g, c, m, _ in COMMANDS if g == group and c == name})


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command (``argv`` None), or of the command ``argv`` names with the
    others as help-only placeholders."""
    load = {m for _, _, m, _ in COMMANDS} if argv is None else set(modules_for(argv))
    parser = Parser(
        prog="s2dit",
        description="Teacher-cache distillation of Wan 2.2 into the S2DiT streaming student.",
        epilog="exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()),
    )
    parser.add_argument("--version", action="version", version=f"s2dit {installed_version()}")
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subparsers: dict[str | None, argparse._SubParsersAction] = {None: top}
    for group, _, _, _ in COMMANDS:
        if group is not None and group not in subparsers:
            group_parser = top.add_parser(group, help=GROUP_HELP[group], description=GROUP_HELP[group])
            subparsers[group] = group_parser.add_subparsers(dest=f"{group}_command", required=True,
                                                            metavar="SUBCOMMAND")
    for group, command, module, text in COMMANDS:
        target = subparsers[group]
        if module in load:  # the real parsers of every command of this module
            load.discard(module)
            importlib.import_module(f"{PACKAGE}.{module}").register(target)
        if command not in target.choices:
            target.add_parser(command, help=text, add_help=False).set_defaults(func=_placeholder)
    for leaf in _leaves(parser):
        if leaf.get_default("func") is not _placeholder:
            add_storage_profile_arg(leaf)
    return parser


def installed_version() -> str:
    """The installed distribution's version (pyproject.toml's, as pip recorded it)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown (not installed: pip install -e .)"


def add_storage_profile_arg(parser: argparse.ArgumentParser) -> None:
    """``--storage-profile NAME`` (once per parser): the storage profile every URL of the
    command is opened with; chosen per run, so never written into a manifest or config.
    (teacher_jobs.cli_args defines the same flag for ``python -m teacher_jobs``.)"""
    if "--storage-profile" in parser._option_string_actions:
        return
    parser.add_argument("--storage-profile", dest="storage_profile", metavar="NAME",
                        help="named storage profile (fsspec options such as an S3 endpoint) from "
                             "$S2DIT_STORAGE_PROFILES or ~/.config/s2dit/storage.toml; default "
                             "$S2DIT_STORAGE_PROFILE, else none")


def _leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    return [leaf for sub in subs for child in sub.choices.values() for leaf in _leaves(child)]


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _main(sys.argv[1:] if argv is None else argv)
        finally:  # inside the try: a reader gone away shows here, not as a traceback at exit
            sys.stdout.flush()
    except BrokenPipeError:  # `s2dit cache show URL | head`: the reader has what it wanted
        # stdout's buffer cannot be flushed any more: point it at /dev/null so that the flush at
        # exit does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _main(argv: list[str]) -> int:
    args = build_parser(argv).parse_args(argv)
    if args.func is _placeholder:  # argv named its command in a way modules_for did not see
        args = build_parser().parse_args(argv)
    from cache_schema.reachability import check_reachable
    from cache_schema.store import refuse_unsupported_scheme, refuse_url_credentials, use_profile
    from pipeline.commands.errors import is_user_error, report

    # Every leaf parser sets ``func`` with set_defaults(func=...); it returns an exit code.
    try:
        urls = []
        for key, value in vars(args).items():  # before anything records or prints a URL
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str):
                    what = f"--{key.replace('_', '-')}"
                    refuse_url_credentials(item, what)
                    if key not in NOT_STORAGE:
                        refuse_unsupported_scheme(item, what)
                        urls.append(item)
        with use_profile(getattr(args, "storage_profile", None)):
            for url in urls:  # a wrong endpoint or bucket in seconds, before any work starts
                check_reachable(url)
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted: committed generations and published checkpoints are intact; "
              "rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        if not is_user_error(exc):
            raise
        return report(exc)


if __name__ == "__main__":
    sys.exit(main())
