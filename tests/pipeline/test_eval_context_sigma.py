"""The context noise level a checkpoint is streamed at comes from its registered stage."""

from __future__ import annotations

import pytest

from pipeline.eval import trained_context_sigma


@pytest.mark.parametrize("state, sigma", [
    ({}, 0.0),  # a stage-1 checkpoint from before checkpoints named their stage
    ({"stage": "kd", "config": {"context_sigma": 0.3}}, 0.0),  # KD commits clean chunks
    ({"stage": "causal", "config": {"context_sigma": 0.3}}, 0.3),
    ({"stage": "ar", "config": {"context_sigma": 0.2}}, 0.2),
    ({"stage": "ar", "config": {}}, 0.0),
])
def test_the_checkpoints_stage_says_its_context_sigma(state, sigma):
    assert trained_context_sigma(state) == sigma
