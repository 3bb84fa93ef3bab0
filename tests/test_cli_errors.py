"""Bad input to any command: one `error:` line on stderr naming the thing, exit code 2, no
traceback (S2DIT_DEBUG=1 adds it); a near miss is told what was meant; `| head` ends quietly."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main

_spec = importlib.util.spec_from_file_location(
    "cli_cache_factory", Path(__file__).parent / "student_train" / "cache_factory.py")
factory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(factory)


@pytest.mark.parametrize("argv,expected", [
    (["train", "kd", "--cache", "{tmp}/no-cache", "--out", "{tmp}/run"], "no cache at"),
    (["eval", "--checkpoint", "{tmp}/nothing"], "is not a complete checkpoint"),
    (["train", "kd", "--cache", "{tmp}", "--out", "{tmp}/run", "--config", "{tmp}/bad.toml"],
     "is not valid TOML"),
    (["cache", "show", "nosuch://bucket/cache"], "nosuch:// is not a supported storage scheme"),
])
def test_bad_input_is_one_line_on_stderr_with_exit_code_2(argv, expected, tmp_path, capsys):
    (tmp_path / "bad.toml").write_text("steps = = 3\n")
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and expected in captured.err, captured
    assert "Traceback" not in captured.err + captured.out


def test_the_console_script_exits_2_and_debug_shows_the_traceback(tmp_path):
    argv = [sys.executable, "-m", "pipeline.cli", "eval", "--checkpoint", str(tmp_path / "x")]
    plain = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert "error: " in plain.stderr and "not a complete checkpoint" in plain.stderr
    debug = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "S2DIT_DEBUG": "1"}, check=False)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# Every leaf command meeting a wrong flag, a missing path, an unsupported URL scheme and an
# unreachable endpoint: tests/pipeline/test_cli_error_matrix.py.


@pytest.mark.parametrize("argv,hint", [
    (["cache", "verify", "x", "--deeep"], "did you mean --deep?"),
    (["cache", "lss", "x"], "did you mean 'ls'?"),
    (["cahce", "ls", "x"], "did you mean 'cache'?"),
    (["run", "c.toml", "--pln"], "did you mean --plan?"),
    (["demo", "--encoding", "zar"], "did you mean 'zarr'?"),
])
def test_a_near_miss_is_told_what_was_meant(argv, hint, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert hint in _one_error_line(capsys.readouterr().err)


# argparse's help output ignores a closed stdout itself (exit 0)
@pytest.mark.parametrize("command,code", [(["cache", "show", "{cache}"], 141),
                                          (["cache", "generate", "--help"], 0)])
def test_a_reader_that_goes_away_ends_the_command_quietly(command, code, tmp_path):
    cache = factory.make_cache(tmp_path / "cache", seeds=1) if "{cache}" in command else ""
    # stdout's read end closed before the command writes: what `| head` does once it has its lines
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *(a.format(cache=cache) for a in command)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == code and err == ""
