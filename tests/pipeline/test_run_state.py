"""run_state.json is input, not truth (issue 28): validated against a schema with one error
line; recorded paths and checkpoints/LATEST followed only inside the run folder; "up to date"
only while the recorded outputs exist (and the checkpoint is the one recorded)."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from pipeline.cli import main
from pipeline.graph import STAGES, load_run_config, run_graph
from pipeline.graph.plan import plan_graph
from pipeline.graph.stage import Stage, StageContext
from pipeline.graph.stages import tag
from pipeline.graph.stages.training import RECORDED, checkpoint_intact
from pipeline.graph.state import RunState
from pipeline.graph.state_schema import PATHS, RunStateError
from student_train.checkpoint import latest_checkpoint

QUIET = Console(quiet=True)
NAMES = tuple(s.name for s in STAGES)
RECORDS = {s.name: s.recorded for s in STAGES}
FUZZ = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _one_error(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    return captured.err


def _valid_state(run: str) -> dict:
    """A state as a finished run writes it (every stage done, outputs in the run folder)."""
    cache = f"{run}/cache"
    outputs = {
        "corpus": {"prompts": f"{run}/prompts.txt", "kind": "analytic", "count": 2,
                   "sample_prompts": ["a red ring moving left"]},
        "generate": {"cache": cache, "generation": 1, "teacher": "analytic",
                     "fingerprint_digest": "ab" * 32},
        "verify": {"verify": f"{run}/verify.json"},
        "tag": {"cache_url": f"{cache}@train", "tag": "train", "generation": 1},
        "train_kd": {"out": f"{run}/student", "checkpoint": f"{run}/student/checkpoints/step_000003",
                     "tensors_sha256": "cd" * 32},
        "eval_kd": {"scores": f"{run}/eval_kd.json", "checkpoint": f"{run}/student/checkpoints/step_000003"},
        "train_ar": {"out": f"{run}/student_ar", "checkpoint": f"{run}/student_ar/checkpoints/step_000002",
                     "phase_seconds": {"causal": 1.0}},
        "eval_ar": {"scores": f"{run}/eval_ar.json"},
        "sample": {"sidecar": f"{run}/preview/preview.json",
                   "outputs": {"videos": [f"{run}/preview/preview.0.mp4"], "sidecar": f"{run}/preview/preview.json"},
                   "prompts": ["a red ring moving left"], "stage": "ar", "checkpoint": f"{run}/student_ar"},
        "compare": {"results": f"{run}/compare/results.json", "page": f"{run}/compare/index.html"},
        "report": {"report_json": f"{run}/report.json", "report_html": f"{run}/report.html"},
    }
    stages = {name: {"status": "done", "fingerprint": "f" * 64, "inputs": {}, "outputs": outputs[name],
                     "started": "2025-01-01T00:00:00.000+00:00", "finished": "2025-01-01T00:00:01.000+00:00",
                     "seconds": 1.0} for name in NAMES}
    return {"run_version": 1, "stages": stages}


@pytest.fixture
def run_dir(tmp_path) -> tuple[Path, Path]:
    config = tmp_path / "run.toml"
    config.write_text("[corpus]\nkind = 'analytic'\n")
    run = tmp_path / "run"
    run.mkdir()
    return config, run


# valid JSON that s2dit never writes (the shapes that ended in tracebacks, and more)
BROKEN = [
    ({"stages": {"corpus": []}}, "stages.corpus must be an object"),
    ({"stages": {"corpus": {}}}, "stages.corpus.status is None"),
    ({"stages": {"corpus": {"status": "done", "outputs": {}}}}, "stages.corpus.outputs.prompts is missing"),
    ({"stages": {"corpus": {"status": "done", "outputs": {"prompts": 3, "sample_prompts": []}}}},
     "stages.corpus.outputs.prompts must be a path"),
    ({"stages": {"corpus": {"status": "running", "resumed": "x"}}}, "stages.corpus.resumed must be a int"),
    ({"stages": {"generate": {"status": "done", "outputs": []}}}, "stages.generate.outputs must be an object"),
    ({"stages": {"train_ar": {"status": "failed", "outputs": {"phase_seconds": "x"}}}},
     "stages.train_ar.outputs.phase_seconds must be a object of numbers"),
    ({"stages": {}, "partial": ["../../etc"]}, "partial must be a list of file names"),
    ({"stages": {}, "extra": 1}, "extra is not a key"),
    ({"stages": {"corpus": {"status": "done", "seconds": float("nan")}}}, "seconds must be a number"),
]


@pytest.mark.parametrize(("body", "message"), BROKEN, ids=[m.split()[0] for _, m in BROKEN])
def test_a_state_s2dit_did_not_write_is_one_error_line_naming_the_key(run_dir, capsys, body, message):
    config, run = run_dir
    (run / "run_state.json").write_text(json.dumps({"run_version": 1, **body}))
    for extra in (["--plan"], ["--only", "corpus"]):
        assert main(["run", str(config), "--out", str(run), "--no-progress", *extra]) == 2
        err = _one_error(capsys)
        assert message in err and "run_state.json" in err, err
    assert sorted(p.name for p in run.iterdir()) == ["run_state.json"]  # nothing written


def test_a_copied_run_folder_never_reads_or_writes_the_original(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text("[corpus]\nkind = 'inline'\nprompts = ['a red ring moving left']\n"
                      "[job]\nenabled = false\n")
    original, copied = tmp_path / "original", tmp_path / "copied"
    assert main(["run", str(config), "--out", str(original), "--no-progress"]) == 0
    shutil.copytree(original, copied)
    before = {p: p.read_bytes() for p in original.rglob("*") if p.is_file()}
    capsys.readouterr()
    # the copy's state records the original's paths: refused by key, with what to do
    assert main(["run", str(config), "--out", str(copied), "--no-progress"]) == 2
    err = _one_error(capsys)
    assert "stages.corpus.outputs.prompts" in err and "outside this run folder" in err
    assert "--from corpus" in err
    assert main(["run", str(config), "--out", str(copied), "--from", "corpus", "--no-progress"]) == 0
    state = json.loads((copied / "run_state.json").read_text())
    assert state["stages"]["corpus"]["outputs"]["prompts"] == f"{copied}/prompts.txt"
    assert {p: p.read_bytes() for p in original.rglob("*") if p.is_file()} == before
    # the case: a tag stage whose recorded cache is another run's writes nothing there
    other_cache = tmp_path / "elsewhere" / "cache"
    other_cache.mkdir(parents=True)
    state = RunState.load(str(copied), NAMES, RECORDS)
    state.stages["generate"] = {"status": "done", "outputs": {
        "cache": str(other_cache), "generation": 1, "fingerprint_digest": "x"}}
    ctx = StageContext(run_dir=str(copied), config=load_run_config(str(config)), state=state,
                       console=QUIET, recorded=RECORDS)
    with pytest.raises(RunStateError, match="stages.generate.outputs.cache .* outside this run"):
        tag.STAGE.run(ctx)
    assert not list(other_cache.iterdir())


@pytest.mark.parametrize("latest", ["../../../elsewhere/step_000001", "/etc", "step_1/../../x",
                                    "s3://bucket/step_000001", "x" * 200])
def test_checkpoints_latest_names_only_a_folder_beside_it(tmp_path, latest):
    out = tmp_path / "student"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "LATEST").write_text(latest)
    with pytest.raises(ValueError, match="checkpoints/LATEST names .* not a checkpoint folder"):
        latest_checkpoint(str(out))
    (out / "checkpoints" / "LATEST").write_text("step_000012\n")
    assert latest_checkpoint(str(out)) == f"{out}/checkpoints/step_000012"


def _checkpoint_stage(log: list[str]) -> tuple[Stage, ...]:
    """A training-like stage: a checkpoint folder, recorded with its tensors' digest, and a
    preview-like file recorded in nested outputs."""
    def run(ctx: StageContext) -> dict:
        log.append("train")
        folder = Path(ctx.path("student/checkpoints/step_000001"))
        folder.mkdir(parents=True, exist_ok=True)
        payload = b"tensors"
        (folder / "model.safetensors").write_bytes(payload)
        digest = hashlib.sha256(payload).hexdigest()
        (folder / "state.json").write_text(json.dumps({"tensors_sha256": digest}))
        return {"out": ctx.path("student"), "checkpoint": str(folder), "tensors_sha256": digest}

    def preview(ctx: StageContext) -> dict:
        log.append("preview")
        Path(ctx.path("preview")).mkdir(exist_ok=True)
        Path(ctx.path("preview/a.mp4")).write_bytes(b"mp4")
        return {"outputs": {"videos": [ctx.path("preview/a.mp4")]}}

    return (Stage(name="train", title="t", section="train", run=run, writes=("student",),
                  still_there=checkpoint_intact, recorded=RECORDED),
            Stage(name="preview", title="p", section="sample", run=preview, needs=("train",),
                  writes=("preview",), recorded={"outputs": PATHS}))


def test_up_to_date_only_while_the_recorded_outputs_exist(run_dir):
    config, run = run_dir
    log: list[str] = []
    stages = _checkpoint_stage(log)

    def again() -> list[str]:
        plan = [s.action for s in plan_graph(load_run_config(str(config)), stages, str(run))]
        run_graph(load_run_config(str(config)), stages, str(run), console=QUIET)
        return plan

    run_graph(load_run_config(str(config)), stages, str(run), console=QUIET)
    assert again() == ["up to date", "up to date"] and log == ["train", "preview"]
    checkpoint = run / "student" / "checkpoints" / "step_000001"
    (checkpoint / "model.safetensors").unlink()  # before: still "up to date"
    assert again() == ["run", "run"] and log[2:] == ["train", "preview"]
    (checkpoint / "state.json").write_text(json.dumps({"tensors_sha256": "0" * 64}))  # replaced
    assert again() == ["run", "run"] and log[4:] == ["train", "preview"]
    (run / "preview" / "a.mp4").unlink()  # a deleted video of the preview stage
    assert again() == ["up to date", "run"] and log[6:] == ["preview"]


def _json() -> st.SearchStrategy:
    leaves = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12)
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


PATHS_TRIED = st.sampled_from(["/etc/passwd", "../x", "s3://bucket/cache", "", "RUN/../x",
                               "RUN/cache@train", "RUN/student/checkpoints/step_000003", "\0"])


@st.composite
def _mutated_state(draw) -> dict:
    """A valid state with one value replaced (random JSON or a hostile path), or removed."""
    state = copy.deepcopy(_valid_state("RUN"))
    node, key = state, None
    for _ in range(draw(st.integers(1, 5))):
        if not isinstance(node, dict) or not node:
            break
        key = draw(st.sampled_from(sorted(node)))
        if isinstance(node[key], dict) and draw(st.booleans()):
            node = node[key]
            continue
        break
    if isinstance(node, dict) and key in node:
        action = draw(st.sampled_from(["json", "path", "remove"]))
        if action == "remove":
            del node[key]
        else:
            node[key] = draw(_json() if action == "json" else PATHS_TRIED)
    return state


@FUZZ
@given(body=st.one_of(_mutated_state(), _json(), st.fixed_dictionaries(
    {"run_version": st.just(1), "stages": st.dictionaries(st.sampled_from(NAMES), _json(), max_size=3)})))
def test_any_run_state_shape_is_a_plan_or_one_error_line(run_dir, capsys, body):
    config, run = run_dir
    text = json.dumps(body).replace("RUN", str(run))
    (run / "run_state.json").write_text(text)
    code = main(["run", str(config), "--out", str(run), "--plan"])  # an exception fails the test
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    if code == 2:
        assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    else:
        assert code == 0 and not captured.err
    assert sorted(p.name for p in run.iterdir()) == ["run_state.json"]
