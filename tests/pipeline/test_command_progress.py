"""Progress on commands that work for seconds (issue 29): `s2dit report` says which section it
builds (`s2dit eval`: tests/student_train/test_eval_progress.py); on stderr and on a terminal
only, so pipes get the same stdout as before."""

from __future__ import annotations

import pytest

from pipeline.cli import main
from pipeline.graph import bundled_config
from pipeline.report import write_report


@pytest.fixture
def run_dir(tmp_path, capsys) -> str:
    run = str(tmp_path / "run")
    assert main(["run", bundled_config("demo.toml"), "--out", run, "--only", "corpus",
                 "--no-progress"]) == 0
    capsys.readouterr()
    return run


def test_the_report_tells_its_progress_section_by_section(run_dir):
    seen = []
    write_report(run_dir, progress=lambda done, total, part: seen.append((done, total, part)))
    assert [s[0] for s in seen] == list(range(len(seen))) and {s[1] for s in seen} == {len(seen)}
    assert seen[0][2] == "Stages and timings" and "Quality (analytic oracle)" in [s[2] for s in seen]


def test_report_progress_goes_to_a_terminal_s_stderr_only(run_dir, capsys, monkeypatch):
    assert main(["report", run_dir]) == 0  # a pipe: stdout as before, stderr empty
    captured = capsys.readouterr()
    assert captured.out == f"report: {run_dir}/report.html\n" and captured.err == ""
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich treats stderr as a terminal
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["report", run_dir]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"report: {run_dir}/report.html\n"
    # drawn at the last section, then cleared (transient): nothing is left on the terminal
    assert "report: Students compared" in captured.err and captured.err.endswith("\x1b[2K")

