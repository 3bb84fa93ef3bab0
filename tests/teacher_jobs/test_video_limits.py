"""Each teacher declares the video sizes it can produce (issue 28): JobConfig accepts exactly
those, and refuses the others with one line naming the key, the value, the allowed values and
the nearest valid value, before any work (generate, estimate, run and --plan alike).

The oracles below are written from each teacher's own rules, not from the declaration; the
real-module tests check that those rules are the models' (the tiny Wan transformer, the
analytic teacher's means)."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipeline.cli import main
from teacher_jobs.config import JobConfig
from teacher_jobs.teachers.analytic import AnalyticConfig, AnalyticTeacher
from teacher_jobs.teachers.spec import VideoSize
from teacher_jobs.teachers.tiny_wan import tiny_configs
from teacher_jobs.teachers.video_limits import MAX_FRAMES, MAX_SIDE, SizeGrid
from teacher_jobs.teachers.wan_limits import wan_limits

PROPERTY = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
REAL = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _near(step: int, offset: int, top: int) -> st.SearchStrategy[int]:
    """Values on a grid, one off it, and anywhere in [1, top]: the edges are where bugs are."""
    on = st.builds(lambda k, d: min(top, max(1, step * k + offset + d)),
                   st.integers(0, top // step), st.sampled_from([0, 0, 0, -1, 1, step // 2]))
    return st.one_of(on, st.integers(1, top))


SIZES = st.tuples(_near(8, 0, MAX_SIDE), _near(8, 0, MAX_SIDE), _near(4, 1, MAX_FRAMES))


def _analytic_ok(h: int, w: int, f: int, *, task: str = "motion", v: int = 3, g: int = 9,
                 chunk: int = 0, channels: int = 4) -> bool:
    if h % 8 or w % 8 or (f - 1) % 4 or h < 24 or w < 24:  # pixels/8, frames/4, 3x3 objects
        return False
    latent_frames = (f - 1) // 4 + 1
    if task == "memory" and latent_frames <= v + g:  # the object must reappear
        return False
    if latent_frames < chunk:
        return False
    modes = 3 * (2 * 3 if task == "memory" else 1)  # modes_per_class x codes x branches
    means = 18 * modes * channels * latent_frames * (h // 8) * (w // 8) * 8  # float64 bytes
    return means <= 2 << 30


def _wan_ok(h: int, w: int, f: int, *, multiple: int, rope: int, spatial: int) -> bool:
    sides = all(x % multiple == 0 and x // multiple <= rope for x in (h, w))
    return sides and (f - 1) % 4 == 0 and (f - 1) // 4 + 1 <= rope


CASES = {
    "analytic motion": ({"kind": "analytic"}, _analytic_ok),
    "analytic memory": ({"kind": "analytic", "task": "memory"},
                        lambda h, w, f: _analytic_ok(h, w, f, task="memory")),
    "analytic causal pairs": ({"kind": "analytic", "causal_chunk_frames": 7, "latent_channels": 16},
                              lambda h, w, f: _analytic_ok(h, w, f, chunk=7, channels=16)),
    "wan-tiny": ("wan-tiny", lambda h, w, f: _wan_ok(h, w, f, multiple=16, rope=32, spatial=8)),
    "wan A14B": ({"kind": "wan"}, lambda h, w, f: _wan_ok(h, w, f, multiple=16, rope=1024, spatial=8)),
}


def _refusal(teacher, h: int, w: int, f: int) -> str | None:
    try:
        JobConfig(teacher=teacher, height=h, width=w, frames=f)
    except ValueError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("case", sorted(CASES))
@PROPERTY
@given(size=SIZES)
def test_accepted_sizes_are_exactly_the_valid_ones(case, size):
    teacher, valid = CASES[case]
    h, w, f = size
    refusal = _refusal(teacher, h, w, f)
    assert (refusal is None) == valid(h, w, f), (size, refusal)
    if refusal is None:
        return
    # one line: the key, its value, what is allowed, and a nearest value that is allowed
    assert "\n" not in refusal and "Traceback" not in refusal
    found = re.fullmatch(r"\[job\] (height|width|frames) = (\d+): (.+) allows (.+); "
                         r"(nearest valid value: (\d+)|no value is valid with the other "
                         r"settings: change them first)", refusal)
    assert found, refusal
    key, value = found[1], int(found[2])
    given_sizes = {"height": h, "width": w, "frames": f}
    assert value == given_sizes[key]
    if found[6] is None:  # only when every refused key's grid is emptied by the others
        return
    near = int(found[6])
    assert near != value
    fixed = {**given_sizes, key: near}
    again = _refusal(teacher, fixed["height"], fixed["width"], fixed["frames"])
    assert again is None or not again.startswith(f"[job] {key} ="), (refusal, again)


@PROPERTY
@given(size=SIZES)
def test_the_ti2v_form_takes_multiples_of_32(size):
    """TI2V-5B: a 16x spatial VAE x patch 2; the declaration reads the configs, not a constant."""
    h, w, f = size
    limits = wan_limits(tiny_configs("ti2v-5b"), "tiny ti2v-5b")
    assert limits.allows(VideoSize(height=h, width=w, frames=f)) == _wan_ok(
        h, w, f, multiple=32, rope=32, spatial=16)


@given(step=st.integers(1, 9), offset=st.integers(0, 8), lo=st.integers(1, 60),
       hi=st.integers(1, 60), value=st.integers(1, 80))
@PROPERTY
def test_the_nearest_value_is_allowed_and_nothing_allowed_is_nearer(step, offset, lo, hi, value):
    assume(offset < step)
    grid = SizeGrid(step=step, offset=offset, lo=lo, hi=hi)
    allowed = [v for v in range(1, 81) if grid.allows(v)]
    near = grid.nearest(value)
    if not allowed:
        assert near is None
        return
    assert grid.allows(near) and abs(near - value) == min(abs(v - value) for v in allowed)


@pytest.fixture(scope="module")
def tiny_transformer():
    from teacher_jobs.teachers.tiny_wan import build_tiny_pipeline

    return build_tiny_pipeline().transformer


@REAL
@given(latent=st.tuples(st.integers(1, 36), st.integers(1, 70), st.integers(1, 70)))
def test_the_tiny_wan_transformer_runs_exactly_the_accepted_sizes(tiny_transformer, latent):
    """The declaration against the real module: accepted <=> the forward pass keeps the shape
    (an odd latent side loses a row to the patch; past rope_max_seq_len the rope table ends)."""
    frames, rows, cols = latent
    assume(frames * rows * cols <= 6000)  # tokens x 4: keep each forward pass small
    video = VideoSize(height=8 * rows, width=8 * cols, frames=4 * (frames - 1) + 1)
    x = torch.randn(1, 16, frames, rows, cols)
    try:
        with torch.no_grad():
            out = tiny_transformer(x, timestep=torch.tensor([500]),
                                   encoder_hidden_states=torch.randn(1, 4, 32), return_dict=False)[0]
        runs = out.shape == x.shape
    except RuntimeError:
        runs = False
    assert wan_limits(tiny_configs(), "tiny").allows(video) == runs, (latent, runs)


@REAL
@given(size=st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(1, 16)),
       task=st.sampled_from(["motion", "memory"]))
def test_the_analytic_teacher_builds_exactly_the_accepted_sizes(size, task):
    """On the 8/4 grid, accepted <=> the teacher's means can be built (small sizes)."""
    rows, cols, frames = size
    video = VideoSize(height=8 * rows, width=8 * cols, frames=4 * (frames - 1) + 1)
    extra = {"visible_frames": 1, "gap_frames": 2} if task == "memory" else {}
    refusal = _refusal({"kind": "analytic", "task": task, **extra}, video.height, video.width,
                       video.frames)
    try:
        AnalyticTeacher(AnalyticConfig(latent_shape=(4, frames, rows, cols), task=task, **extra))
        builds = True
    except ValueError:
        builds = False
    assert (refusal is None) == builds, (size, task, refusal)


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


def test_generate_estimate_run_and_plan_refuse_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # any Ray start would fail loudly
    (tmp_path / "p.txt").write_text("a red cat\n")
    want = "[job] height = 70: the wan teacher (tiny-random) allows multiples of 16"
    for command in ("generate", "estimate"):
        output = ["--output", str(tmp_path / "cache")] if command == "generate" else []
        assert main(["cache", command, "--teacher", "wan-tiny", "--prompts", str(tmp_path / "p.txt"),
                     *output, "--height", "70"]) == 2
        err = _one_error(capsys)
        assert want in err and "nearest valid value: 64" in err
    assert not (tmp_path / "cache").exists()
    run = tmp_path / "run.toml"
    run.write_text("[corpus]\nkind = 'analytic'\n[job]\nframes = 18\n[job.teacher]\nkind = 'analytic'\n")
    for extra in (["--plan"], []):
        assert main(["run", str(run), "--out", str(tmp_path / "out"), "--no-progress", *extra]) == 2
        err = _one_error(capsys)
        assert "[job] frames = 18" in err and "4k+1" in err and "nearest valid value: 17" in err
    assert not any((tmp_path / "out").rglob("*"))  # no state, no lock, no corpus
