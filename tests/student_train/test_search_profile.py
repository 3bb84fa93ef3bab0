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
    capsys.readouterr()
    assert main(["search", "--lut", str(lut), "--latency-budget", "0.001", "--out", str(layout)]) == 2
    assert capsys.readouterr().err.startswith("error: no layout of 3-12 blocks")
    assert main(["search", "--lut", str(tmp_path / "none.json"), "--latency-budget", "5",
                 "--out", str(layout)]) == 2
    assert "error: no look-up table at" in capsys.readouterr().err


def _lut(tmp_path, options: dict[str, tuple[float, float]]) -> str:
    """A look-up table of made-up costs: name -> (latency ms, memory MB); 1 ms / 2 MB fixed."""
    path = tmp_path / "lut.json"
    path.write_text(json.dumps({
        "options": [{"name": n, "latency_ms": lat, "memory_mb": mem, "peak_mb": 0.0}
                    for n, (lat, mem) in options.items()],
        "fixed": {"latency_ms": 1.0, "memory_mb": 2.0, "peak_mb": 0.0},
        "model": StudentConfig(dim=48, heads=4).to_json()}))
    return str(path)


def test_a_refused_search_names_what_the_budgets_must_allow(tmp_path, capsys):
    """Issue 29: it said the cheapest needs the least latency x min blocks + fixed (here 4 ms,
    though a sandwich needs two LCHA blocks: 22 ms) and exited 1 without an error line."""
    lut = _lut(tmp_path, {"lcha": (10.0, 1.0), "ssa:1": (1.0, 8.0)})
    search = ["search", "--lut", lut, "--out", str(tmp_path / "layout.json")]
    assert main([*search, "--latency-budget", "5"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert "fits 5 ms: the fastest needs 22.000 ms (lcha,ssa:1,lcha)" in err
    assert main([*search, "--latency-budget", "22"]) == 0  # and that budget is enough
    capsys.readouterr()
    # 4 blocks: lcha,ssa,ssa,lcha takes 23 ms, but 13 MB leaves room for one SSA block only
    assert main([*search, "--latency-budget", "5", "--memory-budget", "13", "--min-blocks", "4"]) == 2
    assert "the fastest within the memory budget needs 32.000 ms" in capsys.readouterr().err
    capsys.readouterr()
    # memory too small for any layout: the smallest (2 + 1 + 8 + 1 MB) is named instead
    assert main([*search, "--latency-budget", "100", "--memory-budget", "5"]) == 2
    assert "the smallest needs 12.000 MB (lcha,ssa:1,lcha)" in capsys.readouterr().err
    assert main([*search, "--latency-budget", "100", "--max-blocks", "2", "--min-blocks", "2"]) == 2
    assert "a sandwich needs 3 blocks or more" in capsys.readouterr().err
