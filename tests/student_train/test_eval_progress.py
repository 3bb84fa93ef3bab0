"""`s2dit eval` says what it samples while it works (issue 29), on a terminal's stderr only."""

from __future__ import annotations

from cache_factory import make_cache

from pipeline.cli import main
from student_train.config import TrainConfig
from student_train.trainer import Trainer


def test_eval_says_what_it_samples_on_a_terminal(tmp_path, capsys, monkeypatch):
    cache = make_cache(tmp_path / "cache", seeds=1)
    cfg = TrainConfig(steps=1, batch_size=4, warmup_steps=1, checkpoint_every=1, log_every=1,
                      model={"dim": 24, "heads": 2})
    Trainer(cache, str(tmp_path / "kd"), cfg).run(progress=False)
    assert main(["eval", "--checkpoint", str(tmp_path / "kd"), "--per-class", "1"]) == 0
    plain = capsys.readouterr()  # a pipe: nothing on stderr
    assert plain.err == ""
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich treats stderr as a terminal
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["eval", "--checkpoint", str(tmp_path / "kd"), "--per-class", "1"]) == 0
    shown = capsys.readouterr()
    assert "eval: teacher and student samples, 1 per class" in shown.err
    assert shown.out == plain.out  # the scores, as before
