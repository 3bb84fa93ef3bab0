"""Every command README.md shows (issue 29), so the docs and the software cannot drift apart.

What is read: every line of a fenced ``bash``/``sh`` block, and every indented (4+ spaces) line
starting with a command, backslash continuations joined; ``ray job submit ... -- CMD`` checks
both the ``ray`` part and CMD; the Commands table's ``s2dit ...`` synopses.

What is checked, per command:
- ``s2dit ...``: parsed by the real parser (``pipeline.cli.build_parser``) without running; a
  synopsis (``[--out URL]`` parts) has each of its flags looked up in its subcommand instead;
  ``--help`` of every subcommand the README names runs.
- ``python -m teacher_jobs ...``: parsed by that entry point's parser.
- ``make X``: a Makefile target; ``.venv/bin/X``: installed, ``-m MARK`` a registered marker.
- every repository path a block names (``configs/...``, ``infra/...``, also in its comments)
  exists.

What runs for real, scaled (``CHEAP``): ``s2dit run`` and ``s2dit demo`` with ``--plan`` (the
plan of the same command, which trains and writes nothing) into a temporary folder; ``cache ls``,
``cache report`` and ``cache estimate`` on a tiny analytic cache in place of runs/demo/cache;
``mkdir``/``cp`` with HOME pointing at a temporary folder. Commands on ``s3://`` or on a
placeholder (``CACHE``, ``SHA``, ``HEAD``), cluster commands and long jobs are parsed only.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import itertools
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.cli import build_parser, main

_spec = importlib.util.spec_from_file_location(
    "readme_cache_factory", Path(__file__).parents[1] / "student_train" / "cache_factory.py")
factory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(factory)

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SHELL = {"bash", "sh", "shell"}
COMMAND = re.compile(r"(s2dit|make|\.venv/bin/\S+|python|ray|cp|mkdir)(\s|$)")
REPO_PATH = re.compile(r"(?<![\w/.~-])((?:configs|infra|bench|tests|cache_schema|teacher_jobs|"
                       r"student_train|pipeline)/[\w./-]*\w)")
DEMO_CACHE = "runs/demo/cache"
PLACEHOLDERS = re.compile(r"^(CACHE|SHA|HEAD|URL|CONFIG\.toml)$|s3://|HEAD:")
# (subcommand words) of the s2dit commands cheap enough to run; run/demo run as --plan
CHEAP = {("run",), ("demo",), ("cache", "ls"), ("cache", "report"), ("cache", "estimate")}


@dataclass(frozen=True)
class Line:
    number: int  # in README.md
    text: str  # as written, continuations joined, comment kept
    block: int  # which block (lines of one block share set-up such as mkdir)

    @property
    def words(self) -> list[str]:
        words = shlex.split(self.text, comments=True)
        return words[:words.index(">")] if ">" in words else words  # `> shards.txt`


def readme_lines() -> list[Line]:
    """The command lines of README.md's shell blocks (fenced and indented), in order."""
    lines, fence, block = [], None, 0
    raw = README.read_text().splitlines()
    number = 0
    while number < len(raw):
        text, number = raw[number], number + 1
        if text.startswith("```"):
            fence = None if fence is not None else text[3:].strip()
            block += 1
            continue
        in_shell = fence in SHELL
        indented = fence is None and text.startswith("    ") and COMMAND.match(text.strip())
        if not (in_shell or indented) or not text.strip():
            continue
        start = number
        while text.rstrip().endswith("\\") and number < len(raw):
            text, number = text.rstrip()[:-1] + " " + raw[number].strip(), number + 1
        lines.append(Line(start, text.strip(), block if in_shell else -start))
    return [part for line in lines for part in _split_submit(line)]


def _split_submit(line: Line) -> list[Line]:
    """``ray job submit ... -- CMD``: the ray part and CMD, each checked on its own."""
    words = line.words
    if words[:3] == ["ray", "job", "submit"] and "--" in words:
        inner = shlex.join(words[words.index("--") + 1:])
        return [line, Line(line.number, inner, line.block)]
    return [line]


@functools.cache
def full_parser():
    return build_parser()


def leaf_parser(words: list[str]):
    """The parser of the s2dit subcommand ``words`` names, and how many words named it."""
    parser, used = full_parser(), 0
    while True:
        subs = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not subs or used >= len(words) or words[used] not in subs[0].choices:
            break
        parser, used = subs[0].choices[words[used]], used + 1
    assert not subs, f"`s2dit {' '.join(words)}` names no s2dit subcommand"
    return parser, used


def long_flags(words: list[str]) -> list[str]:
    """``--x`` flags of a synopsis (``[--out URL]``, ``--[no-]streaming`` -> both forms)."""
    flags = []
    for word in words:
        for flag in re.findall(r"--(?:\[no-\])?[a-z][\w-]*", word):
            if "[no-]" in flag:
                flags += [flag.replace("[no-]", ""), flag.replace("[no-]", "no-")]
            else:
                flags.append(flag)
    return flags


def check_s2dit(words: list[str], where: str) -> None:
    """Parse an s2dit line without running it; a synopsis has its flags looked up instead."""
    parser, used = leaf_parser(words)
    if any(w.startswith("[") for w in words) or "CONFIG.toml" in words:  # a synopsis
        missing = [f for f in long_flags(words[used:]) if f not in parser._option_string_actions]
        assert not missing, f"{where}: `s2dit {' '.join(words[:used])}` has no {missing}"
        return
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            full_parser().parse_args(words)
    except SystemExit as exc:
        pytest.fail(f"{where}: `s2dit {shlex.join(words)}` does not parse (exit {exc.code}): "
                    f"{stderr.getvalue().strip()}")


def check_other(words: list[str], where: str) -> None:
    """make targets, venv tools and their markers, the teacher_jobs entry point, ray, cp."""
    head = words[0]
    if head == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)
        assert set(words[1:]) <= set(targets), f"{where}: no Makefile target {words[1:]}"
    elif head.startswith(".venv/bin/") or head == "ray":
        tool = Path(sys.executable).parent / Path(head).name
        assert tool.exists(), f"{where}: {tool} is not installed"
        markers = {m.split(":")[0] for m in tomllib.loads((ROOT / "pyproject.toml").read_text())
                   ["tool"]["pytest"]["ini_options"]["markers"]}
        if words[1:3] == ["-m", "pytest"]:
            for flag, value in itertools.pairwise(words[3:]):
                assert flag != "-m" or value in markers, f"{where}: no pytest marker {value!r}"
    elif words[:3] == ["python", "-m", "teacher_jobs"]:
        from teacher_jobs.__main__ import build_parser as teacher_parser

        teacher_parser().parse_args(words[3:])
    else:
        assert head in {"cp", "mkdir"}, f"{where}: the test does not know how to check {head!r}"


def repo_paths(text: str) -> list[str]:
    return [p.rstrip(".") for p in REPO_PATH.findall(text)]


LINES = readme_lines()


def test_the_readme_has_the_command_blocks_this_test_reads():
    firsts = [line.words[0] for line in LINES if line.words]
    assert firsts.count("s2dit") >= 25 and "make" in firsts and "python" in firsts
    assert any(line.text.startswith("ray job submit") for line in LINES)


@pytest.mark.parametrize("line", LINES, ids=lambda line: f"README:{line.number}")
def test_each_command_line_parses_and_names_existing_files(line):
    where = f"README.md:{line.number}"
    words = line.words
    if words[0] == "s2dit":
        check_s2dit(words[1:], where)
    else:
        check_other(words, where)
    missing = [p for p in repo_paths(line.text) if not (ROOT / p).exists()]
    assert not missing, f"{where}: {missing} do not exist in the repository"


def table_synopses() -> list[tuple[str, list[str]]]:
    """(where, words) of the Commands table's first cells (`` `s2dit cache log URL` / `tag URL
    NAME` `` is two: the later parts keep the group)."""
    out = []
    for number, row in enumerate(README.read_text().splitlines(), 1):
        if not row.startswith("| `s2dit "):
            continue
        cell = row.split(" | ")[0].replace("\\|", "|")
        group: list[str] = []
        for part in re.findall(r"`([^`]+)`", cell):
            words = part.split()
            if words[0] == "s2dit":
                words = words[1:]
                group = words[:1] if words[0] in {"cache", "teacher"} else []
            else:
                words = group + words
            out.append((f"README.md:{number}", words))
    return out


@pytest.mark.parametrize("where,words", table_synopses(), ids=lambda v: v if isinstance(v, str) else "")
def test_the_commands_table_names_real_subcommands_and_flags(where, words):
    parser, used = leaf_parser(words)
    missing = [f for f in long_flags(words[used:]) if f not in parser._option_string_actions]
    assert not missing, f"{where}: `s2dit {' '.join(words[:used])}` has no {missing}"


def test_every_subcommand_the_readme_names_has_help(capsys):
    named = {tuple(w[:leaf_parser(w)[1]]) for w in
             [line.words[1:] for line in LINES if line.words[0] == "s2dit"]
             + [words for _, words in table_synopses()]}
    assert len(named) >= 20
    for command in sorted(named):
        with pytest.raises(SystemExit) as exited:
            main([*command, "--help"])
        out = capsys.readouterr().out
        assert exited.value.code == 0 and out.startswith(f"usage: s2dit {' '.join(command)}"), command


def scaled(words: list[str], tmp: Path, cache: str) -> list[str] | None:
    """The cheap form of an s2dit line (None: parsed only): the tiny cache for runs/demo/cache,
    outputs into ``tmp``, ``run``/``demo`` as ``--plan``."""
    words = [w.replace(DEMO_CACHE, cache) for w in words]
    command = tuple(words[:2]) if words[0] in {"cache", "teacher"} else tuple(words[:1])
    if command not in CHEAP or any(PLACEHOLDERS.search(w) for w in words):
        return None
    if "--out" in words:
        out = words.index("--out") + 1
        words[out] = str(tmp / f"out{len(list(tmp.iterdir()))}" / Path(words[out]).name)
    if command in {("run",), ("demo",)}:
        words += ["--plan"] + ([] if "--out" in words else ["--out", str(tmp / "run")])
    return words


def test_the_cheap_commands_run_for_real(tmp_path, monkeypatch, capsys):
    cache = factory.make_cache(tmp_path / "cache", seeds=1)
    assert main(["cache", "tag", cache, "train"]) == 0
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(ROOT)  # the README's relative paths (configs/...) are the repository's
    ran = []
    for line in LINES:
        words = line.words[1:] if line.words[0] == "s2dit" else None
        argv = scaled(words, work, cache) if words else None
        if argv is None:
            continue
        capsys.readouterr()
        code = main(argv)
        captured = capsys.readouterr()
        assert code == 0, f"README.md:{line.number}: s2dit {shlex.join(argv)}: {captured.err}"
        assert "Traceback" not in captured.err
        if argv[:2] == ["cache", "ls"]:  # --shards: every printed URL is a committed shard
            assert captured.out.split() and all(Path(u).is_file() for u in captured.out.split())
        ran.append(tuple(argv[:2]))
    assert {("run", "configs/memory.toml"), ("demo", "--plan"), ("cache", "ls"),
            ("cache", "report"), ("cache", "estimate")} <= {r if r[0] != "demo" else ("demo", "--plan")
                                                           for r in ran}, ran
    assert list(work.glob("out*/card.html")), "cache report wrote no card"
    assert not (work / "run").exists(), "a --plan wrote into its run folder"


def test_the_storage_profile_setup_runs_as_written(tmp_path):
    """mkdir/cp of the Storage section, run by the shell with HOME in a temporary folder."""
    setup = [line for line in LINES if line.words[0] in {"cp", "mkdir"}]
    assert setup, "README.md has no profile set-up lines"
    env = {**os.environ, "HOME": str(tmp_path)}
    for line in setup:
        done = subprocess.run(["bash", "-c", line.text], check=False, cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"README.md:{line.number}: {line.text}: {done.stderr}"
    assert (tmp_path / ".config/s2dit/storage.toml").is_file()
