"""The comparison grid's cells side by side (issue 26; pipeline/compare/cells.py) on the local
Ray runtime: a cell trained in a Ray task writes the bytes the in-process cell wrote (its
checkpoints, its evaluation, its videos); cells run max_parallel at once, a finished cell is
not sent again and one cut short resumes; an error in a cell ends the grid as itself once the
running cells finish, and no new cell starts; [compare] ray and max_parallel in a run config
(refused when wrong, neither fingerprinted), through the compare stage of a real run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from rich.console import Console
from test_compare import STAGE_CONFIG, _grid, _metrics_lines
from test_report import build_partial_run

from cache_schema.typed_config import ConfigError
from pipeline.compare import run_grid
from pipeline.compare.cells import placement
from pipeline.graph import STAGES, RunConfigError, load_run_config
from pipeline.graph.config import TaskResources
from pipeline.graph.runner import check_config
from pipeline.graph.stages.compare import compare_config
from student_train.stages import get_stage

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[2]
TIMINGS = ("seconds", "first_chunk_s", "chunk_s")  # wall-clock times: differ between any two runs


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    run, _, prompts = build_partial_run(tmp_path_factory.mktemp("cells") / "run", train_classes=3, seeds=2)
    return run, prompts


def _sha256(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _state(path: Path) -> dict:
    """A checkpoint's state.json without the global Python and numpy RNG states it records:
    nothing in training draws from them (its noise is keyed by seed, torch's generator is seeded),
    so they hold whatever the process drew before, and differ between any two processes."""
    state = json.loads(path.read_text())
    assert set(state["rng"]) == {"torch", "numpy", "python"}
    return {**state, "rng": {"torch": state["rng"]["torch"]}}


def _on_ray(grid, **compare):
    return dataclasses.replace(grid, compare=dataclasses.replace(grid.compare, **compare))


def test_a_cell_in_a_ray_task_writes_the_in_process_bytes(tiny_cache, ray_runtime):
    """With the driver's thread counts: Ray starts a task's process with OMP_NUM_THREADS = its
    num_cpus (torch's threads and numpy's BLAS), and the evaluation's teacher rows differ in
    their last bits between 1 and 2 BLAS threads."""
    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    if threads > int(ray_runtime.cluster_resources().get("CPU", 0)):
        pytest.skip(f"numpy's BLAS has {threads} threads here; no task of the test runtime has as many")
    run, prompts = tiny_cache
    log: list[str] = []
    grid = _grid(run, prompts, log, variants={"s2dit": {}}, lengths=(1,), latency_repeats=1, samples=1)
    grid.out = str(run / "compare_bytes")
    torch.set_num_threads(threads)  # as the task will have (one_thread restores it)
    here = run_grid(grid)
    folder = Path(grid.folder("s2dit", 0))
    before = _sha256(folder)
    sidecar = json.loads((folder / "samples" / "sample.json").read_text())
    states = {n: _state(folder / n) for n in before if n.endswith("/state.json")}
    shutil.rmtree(folder)

    log[:] = []
    there = run_grid(_on_ray(grid, ray={"num_cpus": threads}))
    assert f"1 of 1 cells to bring up to date, up to 1 at once as Ray tasks ({threads} CPU, 0 GPU)" in log
    assert log.index("s2dit seed 0: started") < log.index("s2dit seed 0: training KD")  # its lines came back
    assert any(line.startswith("s2dit seed 0: done in") for line in log)
    after = _sha256(folder)
    # TensorBoard names its event files by time and process: the task's is another process
    events = {name.rsplit(".", 2)[-2] for name in set(after) ^ set(before) if "/tensorboard/events." in name}
    assert len(events) == 2 and str(os.getpid()) in events
    assert {n for n in after if "/tensorboard/" not in n} == {n for n in before if "/tensorboard/" not in n}
    checkpoints = [n for n in before if "/step_" in n]
    assert {n.split("/")[0] for n in checkpoints} == {"kd", "ar"} and any(n.endswith(".safetensors") for n in checkpoints)
    for name in [*checkpoints, "eval_ar.json", *(n for n in before if n.startswith("samples/") and not n.endswith(".json"))]:
        if name in states:  # all but the process-wide Python and numpy RNG states it records
            assert _state(folder / name) == states[name], name
        else:
            assert after[name] == before[name], name
    remote_sidecar = json.loads((folder / "samples" / "sample.json").read_text())
    assert {k: v for k, v in remote_sidecar.items() if k not in TIMINGS} == \
        {k: v for k, v in sidecar.items() if k not in TIMINGS}
    assert there["cells"][0]["scores"] == here["cells"][0]["scores"]
    assert there["cells"][0]["ar_checkpoint"] == here["cells"][0]["ar_checkpoint"]


def test_cells_run_side_by_side_and_a_grid_continues_where_it_stopped(tiny_cache, ray_runtime):
    run, prompts = tiny_cache
    log: list[str] = []
    grid = _grid(run, prompts, log, variants={"s2dit": {}}, lengths=(1,), latency_repeats=1)
    grid.out = str(run / "compare_side_by_side")
    run_grid(grid)  # one cell finished in process
    done_before = _metrics_lines(run)
    # a second variant's KD killed after 2 of its 4 steps
    grid = _grid(run, prompts, log, variants={"s2dit": {}, "wide": {"layout": ["lcha", "lcha"]},
                                              "conv_only": {"layout": ["conv", "conv"]}},
                 lengths=(1,), latency_repeats=1, max_parallel=2, ray={"num_cpus": 1})
    grid.out = str(run / "compare_side_by_side")
    from pipeline.compare.grid import prepare_cell

    prepare_cell(grid, "wide", 0)
    kd = grid.configs("wide", 0)[0]
    get_stage("kd").build(kd, f"{grid.folder('wide', 0)}/kd", cache_url=grid.cache_url).run(progress=False, stop_after=2)

    log[:] = []
    results = run_grid(grid)
    assert "2 of 3 cells to bring up to date, up to 2 at once as Ray tasks (1 CPU, 0 GPU)" in log
    started = [line for line in log if line.endswith(": started")]
    assert started == ["wide seed 0: started", "conv_only seed 0: started"]
    first_done = next(i for i, line in enumerate(log) if ": done in " in line)
    assert all(log.index(line) < first_done for line in started)  # both at once
    assert not [line for line in log if line.startswith("s2dit seed 0")]  # not sent again
    assert {k: v for k, v in _metrics_lines(run).items() if "s2dit" in k} == done_before
    events = [json.loads(line) for line in (Path(grid.folder("wide", 0)) / "kd" / "metrics.jsonl").read_text().splitlines()]
    assert [e.get("event") for e in events if "event" in e] == ["resumed"]
    assert [e["step"] for e in events if "event" not in e] == [1, 2, 3, 4]  # no step twice
    assert [(c["variant"], c["resumed"]) for c in results["cells"]] == [
        ("s2dit", False), ("wide", True), ("conv_only", False)]  # the grid's order, every cell costed
    assert all(c["cost"]["1x"]["passes"] == 1 for c in results["cells"])

    log[:] = []
    run_grid(grid)  # all done: no task at all
    assert "0 of 3 cells to bring up to date, up to 2 at once as Ray tasks (1 CPU, 0 GPU)" in log
    assert not [line for line in log if "started" in line or "training" in line]


def test_side_by_side_a_cell_that_borrows_a_stage_starts_when_its_owner_is_done(tiny_cache, ray_runtime, tmp_path):
    run, prompts = tiny_cache
    log: list[str] = []
    grid = _grid(run, prompts, log, variants={"s2dit": {}, "critic_2": {"train_ar": {"critic_steps": 2}},
                                              "conv_only": {"layout": ["conv", "conv"]}},
                 lengths=(1,), latency_repeats=1, max_parallel=2, ray={"num_cpus": 1})
    grid.out = str(tmp_path / "compare")
    results = run_grid(grid)
    started = [line for line in log if line.endswith(": started")]
    assert started == ["s2dit seed 0: started", "conv_only seed 0: started", "critic_2 seed 0: started"]
    assert log.index("critic_2 seed 0: started") > log.index(next(x for x in log if x.startswith("s2dit seed 0: done in")))
    assert sorted(line for line in log if "training KD" in line) == ["conv_only seed 0: training KD",
                                                                     "s2dit seed 0: training KD"]
    by_variant = {c["variant"]: c for c in results["cells"]}
    assert by_variant["critic_2"]["shared"] == {"kd": "s2dit/seed0"}
    assert by_variant["critic_2"]["kd_checkpoint"] == by_variant["s2dit"]["kd_checkpoint"]


def test_an_error_in_a_cell_ends_the_grid_as_itself_after_the_running_cells(tiny_cache, ray_runtime):
    run, prompts = tiny_cache
    log: list[str] = []
    variants = {"on_gpu": {"train": {"device": "cuda"}}, "s2dit": {}}
    grid = _grid(run, prompts, log, variants=variants, lengths=(1,), latency_repeats=1, max_parallel=1,
                 ray={"num_cpus": 1})
    grid.out = str(run / "compare_failing_one")
    with pytest.raises(ValueError, match="no CUDA device") as caught:
        run_grid(grid)
    assert type(caught.value) is ValueError  # the cell's own error, not Ray's wrapper
    assert any(line.startswith("on_gpu seed 0: failed (ValueError: ") and "no new cell starts" in line
               for line in log)
    assert "s2dit seed 0: started" not in log and not (Path(grid.out) / "results.json").exists()

    log[:] = []
    grid = _on_ray(grid, max_parallel=2)
    grid.out = str(run / "compare_failing_two")
    with pytest.raises(ValueError, match="no CUDA device"):
        run_grid(grid)
    assert any(line.startswith("s2dit seed 0: done in") for line in log)  # it finished first
    assert json.loads((Path(grid.folder("s2dit", 0)) / "cell.json").read_text())["ar_checkpoint"]
    assert not (Path(grid.out) / "results.json").exists()


def test_the_ray_table_and_max_parallel_of_a_run_config(tmp_path):
    def config(text: str):
        (tmp_path / "c.toml").write_text("[corpus]\nkind = 'analytic'\n[compare]\nseeds = [0]\n" + text +
                                         "[compare.variants]\ns2dit = {}\n")
        loaded = load_run_config(str(tmp_path / "c.toml"))
        check_config(loaded, STAGES)
        return compare_config(loaded)

    compare = config("max_parallel = 3\nray = {num_cpus = 1, memory_gb = 2}\n")
    assert compare.max_parallel == 3
    assert placement(compare) == TaskResources(num_cpus=1, num_gpus=0, memory_gb=2)
    assert placement(config("max_parallel = 2\n")) == TaskResources()  # Ray tasks of 1 CPU
    assert placement(config("")) is None  # in this process, as before
    with pytest.raises(RunConfigError, match="num_gpu.*num_gpus"):
        config("ray = {num_gpu = 1}\n")
    with pytest.raises(RunConfigError, match=r"\[compare.ray\] memory_gb must be a number >= 0"):
        config("ray = {memory_gb = -1}\n")
    with pytest.raises((ConfigError, RunConfigError), match="max_parallel"):
        config("max_parallel = 0\n")
    with pytest.raises(RunConfigError, match="max_paralel.*max_parallel"):
        config("max_paralel = 2\n")
    shipped = compare_config(load_run_config(str(ROOT / "configs" / "compare.toml")))
    assert placement(shipped) is None and shipped.max_parallel == 1  # not enabled by default


def test_the_compare_stage_sends_its_cells_to_ray_and_where_is_not_fingerprinted(tmp_path, ray_runtime):
    from pipeline.run_api import run_config

    path, out = tmp_path / "compare.toml", tmp_path / "run"
    in_process = STAGE_CONFIG.replace("[compare.variants]\n", "[compare.variants]\nconv_only = {layout = "
                                      "[\"conv\", \"conv\"]}\n")
    path.write_text(in_process.replace("[compare.variants]\n", "max_parallel = 2\nray = {num_cpus = 1}\n"
                                       "[compare.variants]\n"))
    printed = Console(record=True, width=200)
    state = run_config(load_run_config(str(path)), out=str(out), console=printed, progress=False)
    assert "2 of 2 cells to bring up to date, up to 2 at once as Ray tasks (1 CPU, 0 GPU)" in printed.export_text()
    record = state.get("compare")
    results = json.loads(Path(record["outputs"]["results"]).read_text())
    assert [c["variant"] for c in results["cells"]] == ["conv_only", "lcha_only"]
    # in this process, one at a time: the same stage, up to date
    path.write_text(in_process)
    state = run_config(load_run_config(str(path)), out=str(out), console=Console(quiet=True), progress=False)
    assert state.get("compare")["finished"] == record["finished"]
