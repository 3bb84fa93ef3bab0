"""The `s2dit` command line as a user meets it (pipeline/cli.py): version, usage errors."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys


def test_version_prints_the_installed_version():
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "--version"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.strip() == f"s2dit {importlib.metadata.version('s2dit')}"

