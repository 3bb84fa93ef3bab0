"""student_train/streaming_cost.py: the steady-state timing (``steady_chunk_seconds``) reaches
the end of a stream by committing the chunks before it undenoised, and times the same chunks
against the same streaming state as the full stream (``chunk_seconds``) does; ``chunk_flops``
counts the same last chunk either way. Structure only: no timing is asserted."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from student_train.model import S2DiT, StudentConfig
from student_train.stages import get_stage
from student_train.streaming_cost import (
    CPU_ATTENTION,
    SUMMARY_CHUNKS,
    _stream,
    chunk_flops,
    chunk_seconds,
    clip_chunks,
    steady_chunk_seconds,
)
from student_train.student import StudentCheckpoint

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS = 4  # few-step forwards per chunk (then the commit)
LENGTH = 3  # 3 x 5 latent frames: 15 one-frame chunks


def _student(**model) -> StudentCheckpoint:
    torch.manual_seed(0)
    config = StudentConfig(dim=16, heads=2, **model)
    sigmas = torch.linspace(1.0, 0.0, STEPS + 1).tolist()
    return StudentCheckpoint(url="(random weights)", model=S2DiT(config).eval(),
                             state={"plan": {"schedule_sigmas": sigmas}, "config": {"context_sigma": 0.1}},
                             spec=get_stage("ar"))


def _spied(student: StudentCheckpoint) -> list[dict]:
    """Every forward of ``student``'s model from now on: a commit (d = 0) or a denoising pass,
    the streaming state it ran against (shapes, bytes, frames committed)."""
    calls: list[dict] = []
    forward = student.model.forward_chunk

    def spy(x, sigma, step_size, text, mask, state):
        tensors, _ = state.flatten()
        calls.append({"commit": bool((step_size == 0).all()), "frames": state.chunks_seen,
                      "shapes": [tuple(t.shape) for t in tensors], "nbytes": state.nbytes()})
        return forward(x, sigma, step_size, text, mask, state)

    student.model.forward_chunk = spy  # commit_chunk calls it too (through the instance)
    return calls


@pytest.mark.parametrize("model", [{"layout": ("lcha", "ssa:1", "ssa:1", "lcha")},  # an unbounded KV cache
                                   {"layout": ("ssa:1",) * 2, "ssa_window": 2, "ssa_sink": True}],
                         ids=["unbounded", "windowed"])
def test_the_steady_chunks_run_against_the_full_streams_state(model):
    full_student, steady_student = _student(**model), _student(**model)
    full_calls, steady_calls = _spied(full_student), _spied(steady_student)
    full = chunk_seconds(full_student, LENGTH, batch=2)
    steady = steady_chunk_seconds(steady_student, LENGTH, batch=2)
    count = clip_chunks(full_student, LENGTH)
    assert count == 15 and len(full) == count and len(steady) == SUMMARY_CHUNKS == len(full[-SUMMARY_CHUNKS:])
    # the timed chunks (each: the commit of the chunk before it, then STEPS passes) ran against
    # states of the same shapes and sizes, at the same positions, in both
    timed = SUMMARY_CHUNKS * (STEPS + 1) - 1  # the last chunk is never committed
    assert steady_calls[-timed:] == full_calls[-timed:]
    end = full_calls[-1]
    assert end["frames"] == count - 1 and not end["commit"]
    grows = model.get("ssa_window") is None
    assert (end["nbytes"] > full_calls[STEPS]["nbytes"]) == grows  # the KV cache grew, or the window did not
    # cheaper: the 9 chunks before the warm-up and the timed ones committed, one forward each
    given = count - SUMMARY_CHUNKS - 1
    assert len(full_calls) == count * (STEPS + 1) - 1
    assert len(steady_calls) == given + (SUMMARY_CHUNKS + 1) * (STEPS + 1) - 1
    assert [c["commit"] for c in steady_calls[:given]] == [True] * given


def test_the_last_chunks_flops_are_the_full_streams():
    student = _student()
    count = clip_chunks(student, LENGTH)
    chunks = _stream(student, LENGTH, batch=1)  # every chunk denoised, as chunk_flops once did
    for _ in range(count - 1):
        next(chunks)
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        next(chunks)
    assert chunk_flops(student, LENGTH) == counter.get_total_flops() > 0


def test_a_short_clip_times_its_last_chunks_without_given_ones():
    student = _student()
    calls = _spied(student)
    seconds = steady_chunk_seconds(student, 1, batch=1)  # 5 chunks: all timed, none given
    assert len(seconds) == 5 and not any(c["commit"] for c in calls[:STEPS])
