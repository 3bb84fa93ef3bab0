"""The declarative infrastructure parses, and every command it runs is one our CLIs accept
with config files that exist: in the image (/app is the repository, infra/docker/Dockerfile)
or in the working directory a runtime env ships (relative paths)."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from pipeline.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
YAMLS = sorted((ROOT / "infra").rglob("*.yaml"))


def _commands(entrypoint: str) -> list[list[str]]:
    return [shlex.split(part) for part in entrypoint.split("&&")]


def _check_command(argv: list[str]) -> None:
    if argv[:3] == ["python", "-m", "teacher_jobs"]:
        args, program = _parse_generate(argv[3:]), "teacher_jobs"
    else:
        assert argv[0] == "s2dit", f"unknown entry point {argv[0]!r}"
        args, program = build_parser().parse_args(argv[1:]), "s2dit"
    config = getattr(args, "config", None)
    if config:
        assert "://" not in config
        local = ROOT / config.removeprefix("/app/")
        assert (config.startswith("/app/") or not config.startswith("/")) and local.exists(), \
            f"{program}: config {config} is neither in the image nor in the repository"
        tomllib.loads(local.read_text())


def _parse_generate(argv: list[str]):
    """teacher_jobs' parser without running the job."""
    import argparse

    from teacher_jobs.cli_args import add_generate_args

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    add_generate_args(sub.add_parser("generate"))
    return parser.parse_args(argv)


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(ROOT)))
def test_infra_yaml_parses_and_its_commands_are_valid(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} is empty"
    for doc in docs:
        entrypoint = (doc.get("spec") or {}).get("entrypoint") or doc.get("entrypoint")
        if entrypoint:
            for argv in _commands(entrypoint):
                _check_command(argv)
        runtime_env = (doc.get("spec") or {}).get("runtimeEnvYAML")
        if runtime_env:
            assert isinstance(yaml.safe_load(runtime_env), dict)


def test_storage_profiles_parse():
    profiles = tomllib.loads((ROOT / "infra" / "storage" / "profiles.toml").read_text())["profiles"]
    assert profiles and all(isinstance(v, dict) for v in profiles.values())
    keys = {k for v in profiles.values() for k in v} | {k for v in profiles.values()
                                                       for k in v.get("client_kwargs", {})}
    assert not keys & {"key", "secret", "aws_access_key_id", "aws_secret_access_key", "token"}
