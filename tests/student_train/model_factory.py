"""Shared by the student model tests: a small S2DiT with non-trivial random weights, and a
one-thread setting (tiny tensors gain nothing from threads; on a busy machine thread barriers
make them slow)."""

from __future__ import annotations

import pytest
import torch

from student_train.model import S2DiT, StudentConfig


def random_model(**kw) -> S2DiT:
    torch.manual_seed(0)
    model = S2DiT(StudentConfig(dim=48, heads=4, **kw))
    for p in model.parameters():  # adaLN-zero init would make every block the identity
        p.data.normal_(0, 0.1)
    return model.eval()


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
