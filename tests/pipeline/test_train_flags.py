"""Training knobs from the command line (issue 29): --lr, --checkpoint-every, --causal-steps and
--set KEY=VALUE on `train kd | ar`, `cache generate | estimate | audit` and the student-config
commands (`profile | export`), checked like a file's keys."""

from __future__ import annotations

import json

import pytest

import student_train.launch
from pipeline.cli import main
from student_train.config import TrainConfig
from student_train.self_forcing import ARConfig


@pytest.fixture
def launched(monkeypatch) -> dict:
    """What `s2dit train` would have trained (the config handed to launch), without training."""
    seen: dict = {}

    def fake(stage, config, workers, **kw):
        seen.update(stage=stage, config=config)
        return student_train.launch.Launched(stage=student_train.launch.get_stage(stage),
                                             checkpoint=None, workers=workers)

    monkeypatch.setattr(student_train.launch, "launch", fake)
    return seen


def test_train_kd_takes_lr_cadence_and_any_key_of_train(tmp_path, launched, capsys):
    config = tmp_path / "kd.toml"
    config.write_text("[train]\nsteps = 9\n\n[train.model]\ndim = 48\nheads = 4\n")
    assert main(["train", "kd", "--cache", "c", "--out", "o", "--config", str(config),
                 "--lr", "3e-3", "--checkpoint-every", "50", "--set", "checkpoint_every_s=60",
                 "--set", "train.model.dim=64", "--set", "betas=[0.8, 0.9]"]) == 0
    cfg = launched["config"]
    assert isinstance(cfg, TrainConfig) and launched["stage"] == "kd"
    assert (cfg.lr, cfg.checkpoint_every, cfg.checkpoint_every_s, cfg.steps) == (3e-3, 50, 60.0, 9)
    assert cfg.model == {"dim": 64, "heads": 4} and cfg.betas == (0.8, 0.9)  # the file's heads kept


def test_train_ar_takes_causal_steps_and_its_own_keys(launched):
    assert main(["train", "ar", "--init", "i", "--cache", "c", "--out", "o", "--steps", "5",
                 "--causal-steps", "7", "--lr", "1e-5", "--set", "critic_steps=2",
                 "--set", "train_ar.checkpoint_every_s=0"]) == 0
    cfg = launched["config"]
    assert isinstance(cfg, ARConfig)
    assert (cfg.steps, cfg.causal_steps, cfg.lr, cfg.critic_steps, cfg.checkpoint_every_s) == \
        (5, 7, 1e-5, 2, 0.0)


@pytest.mark.parametrize("flags, message", [
    (["--set", "lrr=1"], "unknown [train] key 'lrr' (did you mean 'lr'?)"),
    (["--set", "lr=fast"], "lr = 'fast'"),
    (["--set", "checkpoint_every_s=-1"], "checkpoint_every_s = -1"),
    (["--set", "model.dim"], "give KEY=VALUE or train.KEY=VALUE"),
    (["--lr", "100"], "lr = 100"),
])
def test_a_bad_override_is_one_error_line(flags, message, launched, capsys):
    assert main(["train", "kd", "--cache", "c", "--out", "o", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not launched


def test_cache_estimate_and_generate_take_set(capsys):
    assert main(["cache", "estimate", "--json", "--set", "teacher.steps=12",
                 "--set", "job.keep_steps='all'"]) == 0
    assert json.loads(capsys.readouterr().out)["kept_steps"] == 12
    assert main(["cache", "generate", "--prompts", "p.txt", "--output", "c",
                 "--set", "seedz=1"]) == 2
    assert "unknown [job] key 'seedz' (did you mean 'seed'?)" in capsys.readouterr().err


def test_audit_and_the_student_config_commands_take_set(tmp_path, capsys, monkeypatch):
    from pipeline.cli import build_parser
    from pipeline.commands import model

    audit = ["cache", "audit", str(tmp_path), "--fraction", "0.5", "--no-progress"]
    assert main([*audit, "--set", "seedz=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --set seedz=3: unknown [job] key 'seedz' (did you mean 'seed'?)")
    seen = {}
    monkeypatch.setattr("pipeline.commands.cache_audit.audit_cache",
                        lambda url, config, **kw: seen.update(kw) or (_ for _ in ()).throw(
                            ValueError("stop")))
    assert main([*audit, "--set", "teacher.steps=3"]) == 2
    assert seen["settings"]["teacher"]["steps"] == 3  # the manifest's config, --set over it
    args = build_parser(["profile"]).parse_args(["profile", "--out", "l.json", "--dim", "48",
                                                 "--set", "mlp_ratio=4", "--set", "model.heads=4"])
    config = model._student_config(args)
    assert (config.dim, config.mlp_ratio, config.heads) == (48, 4.0, 4)
    capsys.readouterr()
    assert main(["export", "--out", str(tmp_path / "x.pt2"), "--set", "mlp_ration=4"]) == 2
    assert ("--set mlp_ration=4: unknown [model] key 'mlp_ration' (did you mean 'mlp_ratio'?)"
            in capsys.readouterr().err)
