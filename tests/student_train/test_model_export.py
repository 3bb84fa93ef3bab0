"""torch.export of the streaming chunk step equals the eager model."""

from __future__ import annotations

import json

import pytest
import torch

from student_train.export import export_chunk_step, max_abs_difference, save_exported
from model_factory import one_thread, random_model  # noqa: F401 (autouse fixture)


def test_exported_chunk_step_matches_eager(tmp_path):
    model = random_model(ssa_window=2, layout=("lcha", "ssa:2", "ssa:1", "lcha"))
    step = export_chunk_step(model, batch=2, text_len=5)
    assert max_abs_difference(step, model, chunks=5) <= 1e-5
    # the program really streams: same chunk, different committed past -> different velocity
    x, sigma, d, text, mask, *state = step.example_args
    module = step.program.module()
    with torch.no_grad():
        v0, *nxt = module(x, sigma, d, text, mask, *state)
        v1, *_ = module(x, sigma, d, text, mask, *nxt)
    assert not torch.allclose(v0, v1)
    meta = save_exported(step, str(tmp_path / "step.pt2"))
    loaded = torch.export.load(str(tmp_path / "step.pt2"))
    with torch.no_grad():
        torch.testing.assert_close(loaded.module()(x, sigma, d, text, mask, *state)[0], v0)
    assert json.loads((tmp_path / "step.pt2.json").read_text())["state"] == meta["state"]


def test_export_needs_a_fixed_size_ssa_cache():
    with pytest.raises(ValueError, match="ssa_window"):
        export_chunk_step(random_model())
