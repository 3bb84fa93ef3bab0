"""The `s2dit` command line as a user meets it (pipeline/cli.py): version, usage errors."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest


def test_version_prints_the_installed_version():
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "--version"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.strip() == f"s2dit {importlib.metadata.version('s2dit')}"



def _help(argv: list[str]) -> str:
    import contextlib
    import io

    import pytest

    from pipeline.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main([*argv, "--help"])
    return out.getvalue()


def test_audit_and_estimate_help_list_only_the_generate_flags_they_read():
    # issue 29: both listed every `cache generate` flag (output, timeouts, budgets, Ray address)
    generate = _help(["cache", "generate"])
    not_read = {
        "audit": ["--prompts", "--output", "--encoding", "--codec", "--samples-per-shard",
                  "--seeds-per-prompt", "--num-actors", "--gpu-memory-gb", "--commit-every",
                  "--placement-timeout", "--load-timeout", "--stall-timeout", "--stall-after",
                  "--max-init-failures", "--max-gpu-hours", "--ray-address"],
        "estimate": ["--output", "--seed", "--placement-timeout", "--load-timeout",
                     "--stall-timeout", "--stall-after", "--max-init-failures", "--max-gpu-hours",
                     "--ray-address"],
    }
    read = {"audit": ["--teacher", "--steps", "--attention-backend", "--height", "--frames",
                      "--keep-steps", "--seed", "--device", "--config", "--set"],
            "estimate": ["--teacher", "--steps", "--offload", "--prompts", "--codec", "--gpu",
                         "--gpu-memory-gb", "--samples-per-shard", "--num-actors", "--config", "--set"]}
    for command, flags in not_read.items():
        text = _help(["cache", command])
        assert all(f"{flag} " in generate for flag in flags)
        assert not [f for f in flags if f"{f} " in text or f"{f}\n" in text], command
        assert all(f"{flag} " in text for flag in read[command]), command


def test_a_job_with_one_failed_unit_says_one_unit(monkeypatch, capsys):
    import argparse
    from types import SimpleNamespace

    from teacher_jobs import cli_args

    report = {"output": "c", "generation": 1, "samples": 3, "units_total": 2, "units_skipped": 0,
              "corpus_rejections": [], "prompt_rejections": [], "units_failed": ["u1"],
              "wall_seconds": 1.0}
    monkeypatch.setattr("teacher_jobs.job.run_generation", lambda config: SimpleNamespace(
        report=report, ok=False, failed_units=["u1"]))
    parser = argparse.ArgumentParser()
    cli_args.add_generate_args(parser)
    assert cli_args.run_generate(parser.parse_args([])) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 1 unit failed: ['u1']; ") and err.endswith("retry it\n"), err


@pytest.mark.parametrize("flags,window", [
    (["--lengths", "1", "4"], "trained"),  # past the trained length: LCHA's sums windowed
    (["--lengths", "1"], None),  # the trained length: as trained (the same samples either way)
    (["--lengths", "4", "--lcha-window", "off"], None),
    (["--lengths", "1", "--lcha-window", "3"], 3),
])
def test_eval_windows_lcha_sums_past_the_trained_length_unless_told(monkeypatch, tmp_path, flags, window):
    import pipeline.eval
    from pipeline.cli import main

    calls = []
    monkeypatch.setattr(pipeline.eval, "evaluate_checkpoint", lambda url, **kw: calls.append(kw) or {})
    monkeypatch.setattr(pipeline.eval, "format_report", lambda report: "")
    assert main(["eval", "--checkpoint", str(tmp_path / "ar"), *flags]) == 0
    assert calls[-1]["lcha_window"] == window
