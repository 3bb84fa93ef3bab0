"""The budget-aware DP: exact against brute force, within budgets, monotone, fast."""

from __future__ import annotations

import random

import pytest

from student_train.search.dp import Option, brute_force, search


def _options(rng):
    return [Option("lcha", rng.uniform(0.5, 2.0), rng.uniform(1, 6), rng.uniform(0.5, 1.0)),
            Option("ssa:1", rng.uniform(1.0, 4.0), rng.uniform(2, 9), rng.uniform(0.7, 1.3)),
            Option("ssa:2", rng.uniform(0.3, 1.5), rng.uniform(1, 4), rng.uniform(0.3, 1.0))]


@pytest.mark.parametrize("seed", range(12))
def test_dp_matches_brute_force_on_small_spaces(seed):
    rng = random.Random(seed)
    options, blocks = _options(rng), rng.randint(3, 6)
    lat, mem = rng.uniform(2, 12), rng.uniform(6, 30)
    dp, ref = search(options, blocks, lat, mem), brute_force(options, blocks, lat, mem)
    assert (dp is None) == (ref is None)
    if dp is None:
        return
    assert dp.quality == pytest.approx(ref.quality)
    assert dp.latency_ms <= lat + 1e-9 and dp.memory_mb <= mem + 1e-9
    kinds = [n.split(":")[0] for n in dp.layout]
    assert kinds[0] == "lcha" and kinds[-1] == "lcha" and "ssa" in kinds  # a sandwich


def test_monotone_in_budget_for_40_blocks():  # speed: bench/bench_student.py
    rng = random.Random(7)
    options = _options(rng)
    previous = -1.0
    for budget in (30, 40, 50, 60, 80):
        result = search(options, 40, budget, 400)
        if result is not None:
            assert result.quality >= previous - 1e-9
            assert result.latency_ms <= budget
            previous = result.quality
    assert previous > 0


def test_profile_then_search_from_the_command_line(tmp_path, capsys):
    import json

    from pipeline.cli import main as cli

    lut = tmp_path / "lut.json"
    assert cli(["profile", "--out", str(lut), "--height", "8", "--width", "8", "--dim", "24",
                "--repeats", "2", "--options", "lcha,ssa:2"]) == 0
    rows = json.loads(lut.read_text())["options"]
    assert set(rows) == {"lcha", "ssa:2"} and all(r["latency_ms"] > 0 for r in rows.values())
    generous = 10 * sum(r["latency_ms"] for r in rows.values()) * 4
    out = tmp_path / "layout.json"
    assert cli(["search", "--lut", str(lut), "--latency-budget", str(generous), "--blocks", "4",
                "--out", str(out)]) == 0
    layout = json.loads(out.read_text())["layout"]
    assert layout[0] == "lcha" and layout[-1] == "lcha" and "ssa:2" in layout
    assert cli(["search", "--lut", str(lut), "--latency-budget", "0.0001", "--blocks", "4",
                "--out", str(out)]) == 1
