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
