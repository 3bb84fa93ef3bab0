"""The ``s2dit`` command line: a thin dispatcher over command modules.

Each module in ``pipeline.commands`` owns one group of subcommands and exposes
``register(subparsers)``; ``cache`` subcommands come from several modules (inspection,
versioning, generation) that all register into the one ``s2dit cache`` group.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from teacher_jobs.cli_args import add_storage_profile_arg

# (group, module): modules register subcommands into the named group, or at top level (None).
COMMAND_MODULES: tuple[tuple[str | None, str], ...] = (
    ("cache", "pipeline.commands.cache_inspect"),
    ("cache", "pipeline.commands.cache_versioning"),
    ("cache", "pipeline.commands.cache_generate"),
    ("cache", "pipeline.commands.cache_report"),
    ("cache", "pipeline.commands.cache_audit"),
    (None, "pipeline.commands.model"),
    (None, "pipeline.commands.train"),
    (None, "pipeline.commands.demo"),
    (None, "pipeline.commands.run"),
    (None, "pipeline.commands.report"),
)

GROUP_HELP = {
    "cache": "inspect, verify, version and generate teacher caches",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s2dit",
        description="Teacher-cache distillation of Wan 2.2 into the S2DiT streaming student.",
    )
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for group, module_name in COMMAND_MODULES:
        module = importlib.import_module(module_name)
        if group is None:
            module.register(top)
            continue
        if group not in groups:
            group_parser = top.add_parser(group, help=GROUP_HELP[group], description=GROUP_HELP[group])
            groups[group] = group_parser.add_subparsers(dest=f"{group}_command", required=True,
                                                        metavar="SUBCOMMAND")
        module.register(groups[group])
    for leaf in _leaves(parser):
        add_storage_profile_arg(leaf)
    return parser


def _leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    return [leaf for sub in subs for child in sub.choices.values() for leaf in _leaves(child)]


def main(argv: list[str] | None = None) -> int:
    from cache_schema.store import refuse_url_credentials, use_profile
    from pipeline.commands.errors import is_user_error, report

    parser = build_parser()
    args = parser.parse_args(argv)
    # Every leaf parser sets ``func`` with set_defaults(func=...); it returns an exit code.
    try:
        for key, value in vars(args).items():  # before anything records or prints a URL
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str):
                    refuse_url_credentials(item, f"--{key.replace('_', '-')}")
        with use_profile(getattr(args, "storage_profile", None)):
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
