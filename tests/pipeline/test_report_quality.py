"""The quality table and the streaming curves from eval dicts: a row per streamed length, the
gate's verdict named, per-chunk curves per length."""

from __future__ import annotations

from pipeline.report.quality import chunk_curves, quality_rows, quality_table


def _scores(passed: bool, chunks: int) -> dict:
    return {"adherence": 0.9, "adherence_ci": [0.85, 0.93], "coverage": 1.0, "dispersion_ratio": 0.8,
            "amplitude_bias": -0.01, "ghost_energy": 0.002, "mode_tv": 0.03, "recall": 0.97,
            "branch_rate": 0.5, "nll_per_dim": -1.0, "samples": 96,
            "gate": {"passed": passed, "failed": [] if passed else ["recall"]},
            "per_chunk": {"chunk_frames": 1, "dispersion": [1.0] * chunks, "amplitude": [1.0] * chunks,
                          "recall": [1.0] + [None] * (chunks - 1)}}


def _eval_ar() -> dict:
    held = {"teacher_fullstep": _scores(True, 15), "teacher_4step": _scores(False, 15),
            "student_ar_4step_streaming": _scores(True, 15),
            "student_ar_4step_streaming_2x": _scores(True, 30),
            "student_ar_4step_streaming_4x": _scores(False, 60)}
    return {"lengths": [1, 2, 4], "held_out_seeds": held, "checkpoint": "c", "step": 1}


def test_a_row_per_streamed_length_with_the_gate_named():
    rows = quality_rows(None, _eval_ar())
    labels = [label for label, *_ in rows]
    assert labels[-3:] == ["S2DiT-AR, streaming", "S2DiT-AR, streaming 2x", "S2DiT-AR, streaming 4x"]
    html = quality_table(None, _eval_ar())
    assert "fail: recall" in html and 'title="95% interval 0.850 to 0.930"' in html


def test_chunk_curves_draw_every_length():
    html = chunk_curves(_eval_ar())
    assert 'id="chunk-curves"' in html
    for name in ("1x", "2x", "4x"):
        assert f">{name}<" in html
    assert "pending" in chunk_curves(None)


def test_the_teacher_is_the_reference_and_never_fails():
    """A reference row says so (it passed against itself; against the data's r = 1 it would
    not); the teacher's few-step baseline and the students show their verdict."""
    ev = _eval_ar()
    held = ev["held_out_seeds"]
    held["teacher_fullstep"].update(role="reference", gate={"passed": False, "failed": ["dispersion"]})
    held["teacher_4step"]["role"] = "baseline"
    for key in held:
        held[key].setdefault("role", "student")
    html = quality_table(None, ev)
    rows = html.split("<tr>")
    teacher = next(r for r in rows if r.startswith("<td>teacher, full-step"))
    assert ">reference</td>" in teacher and "fail" not in teacher
    assert "fail: recall" in next(r for r in rows if r.startswith("<td>teacher, 4-step"))
    # an eval file from before roles: the teacher rows show no gate at all
    old = _eval_ar()
    assert "fail" not in next(r for r in quality_table(None, old).split("<tr>")
                              if r.startswith("<td>teacher, 4-step"))


def test_the_teachers_unipc_row_follows_its_euler_row_when_the_scores_have_it():
    ev = _eval_ar()
    labels = [label for label, *_ in quality_rows(None, ev)]
    assert "teacher, 4-step UniPC" not in labels  # an eval file from before the row
    ev["held_out_seeds"]["teacher_4step_unipc"] = {**_scores(False, 15), "role": "baseline"}
    labels = [label for label, *_ in quality_rows(None, ev)]
    assert labels[:3] == ["teacher, full-step", "teacher, 4-step", "teacher, 4-step UniPC"]
    row = next(r for r in quality_table(None, ev).split("<tr>") if r.startswith("<td>teacher, 4-step UniPC"))
    assert "fail: recall" in row


def test_the_table_says_when_lcha_sums_were_windowed():
    assert "LCHA sums windowed" not in quality_table(None, _eval_ar())
    html = quality_table(None, {**_eval_ar(), "lcha_window": 13})
    assert "LCHA sums windowed to the first chunk and the last 13" in html
