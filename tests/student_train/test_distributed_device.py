"""Each Ray Train rank trains on the GPU Ray assigned it, not all on cuda:0."""

from __future__ import annotations

import torch

from student_train.distributed import rank_device


def test_a_cuda_config_uses_the_rank_s_assigned_gpu_and_cpu_stays_cpu():
    assert rank_device("cuda", torch.device("cuda:3")) == "cuda:3"
    assert rank_device("cuda:0", torch.device("cuda:1")) == "cuda:1"
    assert rank_device("cpu", torch.device("cuda:1")) == "cpu"
    assert rank_device("cpu", None) == "cpu"
