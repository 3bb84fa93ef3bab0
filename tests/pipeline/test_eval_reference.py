"""The evaluation's reference rows and its cache of the teacher's samples (issue 24).

- The teacher's full-step rows are the reference the others are gated against: marked
  ``role = "reference"`` and gated against themselves, not against the data's r = 1 (which
  they fail by design); every other row names the reference it is gated against.
- The teacher's samples are kept on disk keyed by everything they depend on: a second
  evaluation of another checkpoint on the same task and noise samples nothing (counted through
  the real sampler), and every score is the same with the cache, without it, and from a
  damaged entry (sampled again).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from pipeline import eval_reference
from pipeline.eval import ROLES, evaluate_checkpoint, format_report
from pipeline.eval_reference import ENV, resolve_dir
from student_train.config import TrainConfig
from student_train.trainer import Trainer
from teacher_jobs.teachers.analytic_score import Gate, verdict

sys.path.insert(0, str(Path(__file__).parents[1] / "student_train"))
from cache_factory import make_cache

pytestmark = pytest.mark.usefixtures("one_thread")
EVAL = {"per_class": 2, "streaming": True, "lengths": (1, 2)}


def _checkpoint(cache: str, out: Path, seed: int) -> str:
    trainer = Trainer(cache, str(out), TrainConfig(steps=1, batch_size=4, model={"dim": 24, "heads": 2}))
    torch.manual_seed(seed)
    for model in (trainer.model, trainer.ema):
        for p in model.parameters():
            p.data.normal_(0, 0.1)
    return trainer.checkpoint()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("evalref")
    cache = make_cache(root / "cache", seeds=1)
    return _checkpoint(cache, root / "a", 1), _checkpoint(cache, root / "b", 2)


@pytest.fixture
def sampler_calls(monkeypatch) -> list[int]:
    """Counts the teacher's sampling runs: the real sampler, wrapped."""
    calls: list[int] = []
    real = eval_reference.sample_latents

    def counted(*args, **kwargs):
        calls.append(len(args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(eval_reference, "sample_latents", counted)
    eval_reference.clear_memory()
    yield calls
    eval_reference.clear_memory()


def _evaluate(checkpoint: str, cache) -> dict:
    eval_reference.clear_memory()  # what a new process sees
    report = evaluate_checkpoint(checkpoint, reference_cache=str(cache), **EVAL)
    report.pop("checkpoint")
    return json.loads(json.dumps(report))


def test_reference_rows_are_marked_and_gated_against_themselves(checkpoints, tmp_path):
    report = evaluate_checkpoint(checkpoints[0], reference_cache="off", **EVAL)
    rows = report["held_out_seeds"]
    assert {k for k, s in rows.items() if s["role"] == "reference"} == {"teacher_fullstep", "teacher_fullstep_2x"}
    assert rows["teacher_4step"]["role"] == rows["teacher_4step_unipc"]["role"] == "baseline"
    assert all(s["role"] in ROLES for s in rows.values())
    for key in ("teacher_fullstep", "teacher_fullstep_2x"):
        ref = rows[key]
        assert ref["gate"]["against"] == "itself" and ref["dispersion_vs_reference"] == 1.0
        # against the data's r = 1 the teacher's sharper samples fail; against itself they cannot
        assert "dispersion" in verdict(ref, Gate())["failed"]
        assert not {"dispersion", "amplitude_bias", "ghost_energy"} & set(ref["gate"]["failed"])
    against = {k: s["gate"]["against"] for k, s in rows.items() if s["role"] != "reference"}
    assert against == {"teacher_4step": "teacher_fullstep", "teacher_4step_unipc": "teacher_fullstep",
                       "student_4step": "teacher_fullstep",
                       "student_fullstep_grid": "teacher_fullstep",
                       "student_4step_streaming": "teacher_fullstep",
                       "student_4step_streaming_2x": "teacher_fullstep_2x"}
    text = format_report(report)
    lines = {line.split()[0]: line for line in text.splitlines()[2:]}
    assert "reference" in lines["teacher_fullstep"] and "FAIL" not in lines["teacher_fullstep"]
    assert "gate" in lines["teacher_4step"] and "gate" in lines["student_4step"]
    assert "gate" in lines["teacher_4step_unipc"]  # `s2dit eval` prints it as a baseline


def test_the_strong_solver_row_is_the_teacher_with_unipc_on_the_same_noise(checkpoints, monkeypatch):
    """``teacher_4step_unipc``: the analytic teacher sampled with 4 steps of diffusers' UniPC
    (solver = "unipc", on its own sigma grid) from the prompts and seeds of the Euler rows, a
    baseline gated against the reference, in the printout and the HTML table."""
    from pipeline.report.quality import quality_table

    calls: list[tuple[str, int, list[str], list[int]]] = []
    real = eval_reference.sample_latents

    def recorded(teacher, prompts, seeds, **kwargs):
        calls.append((teacher.config.solver, teacher.num_steps, list(prompts), list(seeds)))
        return real(teacher, prompts, seeds, **kwargs)

    monkeypatch.setattr(eval_reference, "sample_latents", recorded)
    eval_reference.clear_memory()
    report = evaluate_checkpoint(checkpoints[0], reference_cache="off", **EVAL)
    eval_reference.clear_memory()
    by_solver = {(solver, steps): (prompts, seeds) for solver, steps, prompts, seeds in calls}
    assert by_solver[("unipc", 4)] == by_solver[("euler", 4)]  # the same noise
    assert sorted(solver for solver, *_ in calls) == ["euler", "euler", "euler", "unipc"]
    euler, unipc = (report["held_out_seeds"][k] for k in ("teacher_4step", "teacher_4step_unipc"))
    assert unipc["samples"] == euler["samples"] and unipc["gate"]["against"] == "teacher_fullstep"
    assert unipc["nll_per_dim"] != euler["nll_per_dim"]  # another solver's samples
    assert "<td>teacher, 4-step UniPC</td>" in quality_table(report, None)


def test_a_second_checkpoint_reuses_the_teachers_samples(checkpoints, sampler_calls, tmp_path):
    a, b = checkpoints
    off = _evaluate(b, "off")
    runs = len(sampler_calls)
    assert runs == 4  # full-step, 4-step Euler and 4-step UniPC at 1x, full-step at 2x
    cold = _evaluate(a, tmp_path / "ref")
    assert len(sampler_calls) == 2 * runs
    assert len(list((tmp_path / "ref").glob("*.npy"))) == len(list((tmp_path / "ref").glob("*.json"))) == runs
    warm = _evaluate(b, tmp_path / "ref")
    assert len(sampler_calls) == 2 * runs  # nothing sampled for the second checkpoint
    assert warm == off  # the same scores, to the bit, with and without the cache
    assert warm["held_out_seeds"]["teacher_fullstep_2x"] == cold["held_out_seeds"]["teacher_fullstep_2x"]
    assert warm["held_out_seeds"]["student_4step"] != cold["held_out_seeds"]["student_4step"]


def test_a_damaged_entry_is_sampled_again(checkpoints, sampler_calls, tmp_path):
    first = _evaluate(checkpoints[0], tmp_path)
    runs = len(sampler_calls)
    victim = min(tmp_path.glob("*.npy"))
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    (sorted(tmp_path.glob("*.json"))[1]).write_text("{half")  # and a half-written key file
    again = _evaluate(checkpoints[0], tmp_path)
    assert len(sampler_calls) == runs + 2 and again == first
    assert _evaluate(checkpoints[0], tmp_path) == first and len(sampler_calls) == runs + 2  # rewritten


def test_the_cache_directory(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_dir() == tmp_path / "xdg" / "s2dit" / "eval_reference"
    monkeypatch.setenv(ENV, str(tmp_path / "env"))
    assert resolve_dir() == tmp_path / "env"
    assert resolve_dir(tmp_path / "arg") == tmp_path / "arg"  # the argument wins
    monkeypatch.setenv(ENV, "off")
    assert resolve_dir() is None


def test_s2dit_eval_takes_the_cache_directory(checkpoints, tmp_path, capsys):
    from pipeline.cli import main

    assert main(["eval", "--checkpoint", checkpoints[0], "--per-class", "1",
                 "--reference-cache", str(tmp_path / "ref"), "--report", str(tmp_path / "e.json")]) == 0
    assert len(list((tmp_path / "ref").glob("*.json"))) == 3  # the teacher's full-step, 4-step Euler, UniPC
    rows = json.loads((tmp_path / "e.json").read_text())["held_out_seeds"]
    assert rows["teacher_fullstep"]["role"] == "reference"
    assert "(reference: the other rows are gated against it)" in capsys.readouterr().out
