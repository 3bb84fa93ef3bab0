"""infra/requirements.lock: every package of the s2dit image, pinned, from an installed venv.

    .venv/bin/python infra/docker/lock.py --write   # after changing dependencies
    .venv/bin/python infra/docker/lock.py --check   # exit 1 naming what differs

The image installs ``s2dit[teacher,student,tracking]`` (infra/docker/Dockerfile). The lock is that
requirement's closure in the venv: each installed distribution reached from it through
``Requires-Dist`` (extras followed, markers evaluated here: Linux, CPython 3.11, as the image),
pinned to the installed version. A local version label is dropped (the venv's ``torch
2.13.0+cpu`` is locked as ``torch==2.13.0``: the image gets PyPI's Linux build of the same
release, whose CUDA runtime packages torch's own metadata pins). The venv itself installs with
the lock as constraints (Makefile), so a venv, CI and the image run the same versions;
tests/test_lock.py checks that, and that Ray is one version in the lock, the venv and every
cluster manifest.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "infra" / "requirements.lock"
PROJECT, EXTRAS = "s2dit", ("teacher", "student", "tracking")
HEADER = f"""\
# Every package of the s2dit image ({PROJECT}[{",".join(EXTRAS)}] and everything it needs), pinned.
# Generated from a venv by `python infra/docker/lock.py --write`; do not edit by hand.
# torch is the release only (a CPU venv has 2.13.0+cpu): the image installs PyPI's Linux wheel
# of it, whose CUDA runtime packages (cuda-toolkit, cuDNN, NCCL, triton) its metadata pins.
"""


def root_requirements(extras: tuple[str, ...] = EXTRAS) -> list[str]:
    """The project's own requirements as pyproject.toml declares them (not the installed
    metadata, which an editable install leaves stale until it is reinstalled)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + [r for e in extras for r in project["optional-dependencies"][e]]


def closure(extras: tuple[str, ...] = EXTRAS) -> dict[str, str]:
    """{distribution name: installed public version} of everything ``PROJECT[extras]`` needs."""
    found: dict[str, str] = {}
    followed: dict[str, set[str]] = {}
    todo: list[tuple[str, frozenset[str], str]] = []
    for text in root_requirements(extras):
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            todo.append((req.name, frozenset(req.extras), PROJECT))
    while todo:
        name, wanted, needed_by = todo.pop()
        key = canonicalize_name(name)
        done = followed.setdefault(key, set())
        if key in found and wanted <= done:
            continue
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            raise SystemExit(f"{name} (needed by {needed_by}) is not installed in this venv: "
                             "install the project first (make setup)") from None
        found[key] = Version(dist.version).public
        done |= wanted
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *wanted)):
                todo.append((req.name, frozenset(req.extras), dist.metadata["Name"]))
    return dict(sorted(found.items()))


def render(pins: dict[str, str]) -> str:
    return HEADER + "".join(f"{name}=={version}\n" for name, version in pins.items())


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """{name: version} of a lock file; every requirement line must be ``name==version``."""
    pins = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        (spec,) = req.specifier  # exactly one specifier ...
        if spec.operator != "==" or req.marker or req.extras or "*" in spec.version:
            raise ValueError(f"{path}:{number}: {line!r} is not pinned as name==version")
        pins[canonicalize_name(req.name)] = spec.version
    return pins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help=f"write {LOCK.relative_to(ROOT)}")
    action.add_argument("--check", action="store_true", help="exit 1 if the lock is not the venv's")
    args = parser.parse_args(argv)
    pins = closure()
    if args.write:
        LOCK.write_text(render(pins))
        print(f"{LOCK.relative_to(ROOT)}: {len(pins)} packages")
        return 0
    locked = read_lock()
    diff = [f"{n}: lock {locked.get(n)}, venv {pins.get(n)}" for n in sorted(set(locked) | set(pins))
            if locked.get(n) != pins.get(n)]
    print("\n".join(diff) or "the lock is the venv's", file=sys.stderr if diff else sys.stdout)
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
