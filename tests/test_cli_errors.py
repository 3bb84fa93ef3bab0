"""Bad input to any command: one `error:` line on stderr naming the thing, exit code 2, no
traceback (S2DIT_DEBUG=1 adds it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline.cli import main


@pytest.mark.parametrize("argv,expected", [
    (["train", "kd", "--cache", "{tmp}/no-cache", "--out", "{tmp}/run"], "holds no committed generation"),
    (["eval", "--checkpoint", "{tmp}/nothing"], "is not a complete checkpoint"),
    (["train", "kd", "--cache", "{tmp}", "--out", "{tmp}/run", "--config", "{tmp}/bad.toml"],
     "is not valid TOML"),
    (["cache", "show", "nosuch://bucket/cache"], "cannot open cache URL 'nosuch://bucket/cache'"),
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
