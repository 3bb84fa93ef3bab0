"""Shared by the student model tests: a small S2DiT with non-trivial random weights (the
one-thread fixture they use lives in tests/conftest.py)."""

from __future__ import annotations

import torch

from student_train.model import S2DiT, StudentConfig


def random_model(**kw) -> S2DiT:
    torch.manual_seed(0)
    model = S2DiT(StudentConfig(dim=48, heads=4, **kw))
    for p in model.parameters():  # adaLN-zero init would make every block the identity
        p.data.normal_(0, 0.1)
    return model.eval()

