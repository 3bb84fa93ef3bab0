"""keep_steps specs (issue 27): sigma-uniform supervises the low-noise regime at a large shift,
unions keep a student's step-uniform starts beside it."""

from __future__ import annotations

import numpy as np
import pytest

from cache_schema import parse_keep_steps
from cache_schema.flow import euler_sigmas


def test_sigma_uniform_spreads_kept_states_over_sigma_not_steps():
    sigmas = euler_sigmas(40, 12.0)[:40]  # Wan 2.2-A14B: shift 12, 40 steps
    by_step = parse_keep_steps("uniform:8", 40, 12.0)
    by_sigma = parse_keep_steps("sigma-uniform:8", 40, 12.0)
    assert min(sigmas[list(by_step)]) > 0.6  # the issue: nothing below 0.63
    assert len(by_sigma) == 8 and by_sigma[0] == 0 and by_sigma[-1] == 39
    assert sum(sigmas[list(by_sigma)] < 0.5) >= 3  # the low-noise regime is supervised
    # without a shift the grid is uniform, and so is the choice; every step when N = steps
    assert parse_keep_steps("sigma-uniform:8", 40, 1.0) == parse_keep_steps("uniform:8", 40)
    assert parse_keep_steps("sigma-uniform:40", 40, 12.0) == tuple(range(40))
    with pytest.raises(ValueError, match="shift"):
        parse_keep_steps("sigma-uniform:8", 40)
    with pytest.raises(ValueError, match="union"):
        parse_keep_steps("sigma-uniform:0", 40, 12.0)


def test_a_union_keeps_the_students_starts_and_the_low_noise_tail():
    keep = parse_keep_steps("uniform:4+sigma-uniform:5", 40, 12.0)
    assert {0, 10, 20, 30} <= set(keep) and len(keep) == 7
    kept = euler_sigmas(40, 12.0)[list(keep)]
    assert np.all(np.diff(kept) < 0) and kept[-1] < 0.25
    assert parse_keep_steps("0,4+every:20", 40) == (0, 4, 20)
