"""Config and include files read with a bound (issue 28): a folder, a device, a FIFO or a file
over 1 MiB is one `error:` line naming it, before anything else is read or written."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cache_schema.config_file import MAX_CONFIG_BYTES, ConfigFileError, load_toml
from pipeline.cli import main


def _targets(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """name -> (path, what the error says)."""
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * MAX_CONFIG_BYTES + "\n[corpus]\n")
    return {"folder": (str(folder), "is a folder"), "device": ("/dev/zero", "is a device"),
            "fifo": (str(fifo), "is a FIFO"), "big": (str(big), "larger than 1 MiB")}


@pytest.mark.parametrize("name", ["folder", "device", "fifo", "big"])
def test_a_config_or_include_that_is_no_small_regular_file_is_one_error_line(tmp_path, capsys, name):
    target, message = _targets(tmp_path)[name]
    run = tmp_path / "run"
    include = tmp_path / "include.toml"
    include.write_text(f"[corpus]\nkind = 'analytic'\n[train]\ninclude = '{target}'\n")
    kd = tmp_path / "kd"
    for argv in (["run", target, "--out", str(run), "--plan"],          # the run config itself
                 ["run", str(include), "--out", str(run), "--plan"],    # an include
                 ["train", "kd", "--config", target, "--cache", str(tmp_path / "c"), "--out", str(kd)]):
        t0 = time.monotonic()
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
        assert message in captured.err and target in captured.err, captured.err
        assert "Traceback" not in captured.err + captured.out and time.monotonic() - t0 < 30
    assert not run.exists() and not kd.exists()


def test_a_small_config_still_reads_and_bad_text_is_named(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text("[train]\nsteps = 3\n")
    assert load_toml(str(good)) == {"train": {"steps": 3}}
    good.write_bytes(b"\xff\xfe[train]")
    with pytest.raises(ConfigFileError, match="not UTF-8"):
        load_toml(str(good))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_toml(str(tmp_path / "absent.toml"))
