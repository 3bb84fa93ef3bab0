"""torch.export of the streaming chunk step equals the eager model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from model_factory import random_model

from student_train.export import export_chunk_step, max_abs_difference, save_exported

pytestmark = pytest.mark.usefixtures("one_thread")


def test_exported_chunk_step_matches_eager(tmp_path):
    model = random_model(ssa_window=2, layout=("lcha", "ssa:2", "ssa:1", "lcha"))
    step = export_chunk_step(model, batch=2, text_len=5)
    assert max_abs_difference(step, model, chunks=5) <= 1e-5
    # the program really streams: same chunk, different committed past -> different velocity
    x, sigma, d, text, mask, *state = step.example_args
    module = step.program.module()
    with torch.no_grad():
        v0, *nxt = module(x, sigma, d, text, mask, *state)
        v1, *_ = module(x, sigma, d, text, mask, *nxt)
    assert not torch.allclose(v0, v1)
    meta = save_exported(step, str(tmp_path / "step.pt2"))
    loaded = torch.export.load(str(tmp_path / "step.pt2"))
    with torch.no_grad():
        torch.testing.assert_close(loaded.module()(x, sigma, d, text, mask, *state)[0], v0)
    assert json.loads((tmp_path / "step.pt2.json").read_text())["state"] == meta["state"]


def test_export_needs_a_fixed_size_ssa_cache():
    with pytest.raises(ValueError, match="ssa_window"):
        export_chunk_step(random_model())


@pytest.mark.slow  # 21 s: torch.export again; the chunk step's export equals eager in the default suite
def test_cli_exports_a_trained_checkpoint_with_its_ema_weights(tmp_path, capsys):
    from cache_factory import make_cache

    from pipeline.cli import main
    from student_train.config import TrainConfig
    from student_train.trainer import Trainer

    cache = make_cache(tmp_path / "cache", seeds=1)
    trainer = Trainer(cache, str(tmp_path / "run"), TrainConfig(steps=2, batch_size=4,
                                                                model={"dim": 24, "heads": 2}))
    trainer.run(progress=False)
    out = tmp_path / "student.pt2"
    assert main(["export", "--model", str(tmp_path / "run"), "--ssa-window", "2", "--out", str(out),
                 "--text-len", "5"]) == 0
    assert "max |diff|" in capsys.readouterr().out
    program = torch.export.load(str(out))
    weights = {k.removeprefix("model."): v for k, v in program.state_dict.items()}
    ema = trainer.ema.state_dict()
    shared = [k for k in weights if k in ema]
    assert shared and all(torch.equal(weights[k], ema[k]) for k in shared)  # EMA, not raw weights
    assert any(not torch.equal(ema[k], trainer.model.state_dict()[k]) for k in shared)
    assert main(["export", "--model", str(tmp_path / "nothing"), "--ssa-window", "2",
                 "--out", str(out)]) == 2
    assert "neither a training output" in capsys.readouterr().err
    # a model trained unbounded keeps chunk 0 as a sink beside the window (the least recall lost)
    names = {s["name"] for s in json.loads(Path(f"{out}.json").read_text())["state"]}
    assert {"sink_k", "sink_v", "k", "v"} <= names
    for sink, kept in (("adjacent", True), ("none", False)):
        assert main(["export", "--model", str(tmp_path / "run"), "--ssa-window", "2", "--stream-sink", sink,
                     "--out", str(out), "--text-len", "5"]) == 0, capsys.readouterr().err
        names = {s["name"] for s in json.loads(Path(f"{out}.json").read_text())["state"]}
        assert ("sink_k" in names) == kept
    assert main(["export", "--model", str(tmp_path / "run"), "--stream-sink", "first", "--out", str(out)]) == 2
    assert "--stream-sink goes with --ssa-window" in capsys.readouterr().err
    pretrained = tmp_path / "pretrained"
    assert main(["export", "--model", str(tmp_path / "run"), "--ssa-window", "3", "--format", "pretrained",
                 "--out", str(pretrained)]) == 0
    config = json.loads((pretrained / "config.json").read_text())
    assert (config["ssa_window"], config["ssa_sink"], config["ssa_sink_adjacent"]) == (3, True, False)
    # LCHA's sums windowed for long streams: a ring of W fixed-size slots in the program too
    assert main(["export", "--model", str(tmp_path / "run"), "--ssa-window", "2", "--lcha-window", "1",
                 "--out", str(out), "--text-len", "5", "--check-chunks", "5"]) == 0, capsys.readouterr().err
    shapes = {s["name"]: s["shape"] for s in json.loads(Path(f"{out}.json").read_text())["state"] if s["block"] == 0}
    assert shapes["s_ring000"] == shapes["s"] and "s_ring001" not in shapes  # W = 1 slot beside the total
    assert main(["export", "--lcha-window", "x", "--out", str(out)]) == 2
