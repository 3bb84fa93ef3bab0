"""Block profiling -> LUT -> search -> a layout the model builds from; the CLI end to end."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.cli import main
from student_train.model import S2DiT, StudentConfig
from student_train.search.memory import PeakMemory
from student_train.search.profile import ProfileConfig, options_from_lut, profile

pytestmark = pytest.mark.usefixtures("one_thread")


def test_peak_memory_counts_live_tensors():
    x = torch.randn(256, 256)
    with PeakMemory() as one:
        y = x + 1
    with PeakMemory() as two:
        y = x + 1
        z = y * 2  # y and z alive together
        del y
        w = z + 1  # y freed before w
    assert two.peak_bytes == 2 * one.peak_bytes == 2 * x.numel() * 4
    del z, w


@pytest.mark.parametrize("mode", ["chunk", "clip"])
def test_profile_measures_every_option(mode):
    cfg = StudentConfig(dim=48, heads=4, ssa_window=1)
    lut = profile(ProfileConfig(model=cfg, mode=mode, repeats=2, warmup=1), progress=False)
    names = [o["name"] for o in lut["options"]]
    assert names == ["lcha", "ssa:1", "ssa:2", "ssa:4"]  # all strides dividing the 4x4 grid
    for o in lut["options"]:
        assert o["latency_ms"] > 0 and o["memory_mb"] > 0 and o["peak_mb"] > 0
    by = {o["name"]: o for o in lut["options"]}
    # the SSA KV cache shrinks with the stride (chunk mode keeps a state)
    if mode == "chunk":
        assert by["ssa:1"]["state_mb"] == 4 * by["ssa:2"]["state_mb"] > 0
    options, costs = options_from_lut(lut, {"lcha": 2.0})
    assert options[0].quality == 2.0 and costs.fixed_latency_ms > 0


def test_cli_profile_search_and_build(tmp_path, capsys):
    lut, layout = tmp_path / "lut.json", tmp_path / "layout.json"
    assert main(["profile", "--out", str(lut), "--dim", "48", "--heads", "4", "--repeats", "2",
                 "--warmup", "1", "--strides", "1,2"]) == 0
    table = json.loads(lut.read_text())
    budget = table["fixed"]["latency_ms"] + 3 * max(o["latency_ms"] for o in table["options"]) * 1.5
    assert main(["search", "--lut", str(lut), "--latency-budget", f"{budget:.4f}",
                 "--max-blocks", "6", "--out", str(layout), "--scores", '{"ssa:1": 3.0}']) == 0
    result = json.loads(layout.read_text())
    assert result["predicted_latency_ms"] <= budget
    assert result["layout"][0] == "lcha" and result["layout"][-1] == "lcha"
    assert "ssa:1" in result["layout"]  # its score makes it the best filling
    model = S2DiT(StudentConfig.from_json(result["model"]))  # the layout builds a model
    assert [b.spec for b in model.blocks] == result["layout"]
    assert main(["search", "--lut", str(lut), "--latency-budget", "0.001", "--out", str(layout)]) == 1
    assert "no layout" in capsys.readouterr().out
    capsys.readouterr()
    assert main(["search", "--lut", str(tmp_path / "none.json"), "--latency-budget", "5",
                 "--out", str(layout)]) == 2
    assert "error: no look-up table at" in capsys.readouterr().err
