"""S2DiT building blocks against references, streaming equivalence, persistence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from student_train.model import S2DiT, StudentConfig
from student_train.model.blocks import MixContext
from student_train.model.lcha import LCHA, depthwise_conv3d
from student_train.model.ssa import SSA


def _rand_model(**kw) -> S2DiT:
    torch.manual_seed(0)
    model = S2DiT(StudentConfig(**kw))
    for p in model.parameters():  # adaLN-zero init would make every block the identity
        p.data.normal_(0, 0.05)
    return model.eval()


def _inputs(b=2, f=5):
    torch.manual_seed(1)
    mask = torch.ones(b, 6, dtype=torch.bool)
    mask[0, 4:] = False
    return torch.randn(b, 4, f, 8, 8), torch.rand(b), torch.rand(b), torch.randn(b, 6, 32), mask


def test_linear_attention_equals_quadratic_reference():
    torch.manual_seed(0)
    lcha = LCHA(24, 2)
    x = torch.randn(2, 3 * 4 * 4, 24)
    grid = (3, 4, 4)
    fq_r, fq, fk_r, fk, v = lcha.features(x, grid, 0)
    out, _ = lcha.attention(x, grid, MixContext(grid=grid), None)
    # naive O(T^2): explicit pairwise kernel weights
    num = torch.einsum("bhid,bhjd->bhij", fq_r, fk_r) @ v
    den = torch.einsum("bhid,bhjd->bhij", fq, fk).sum(-1, keepdim=True)
    torch.testing.assert_close(out, num / (den + 1e-6), rtol=1e-4, atol=1e-5)
    # block-causal: chunk n attends to chunks <= n only
    causal, _ = lcha.attention(x, grid, MixContext(grid=grid, causal=True), None)
    chunk = torch.arange(3).repeat_interleave(16)
    allowed = (chunk[:, None] >= chunk[None, :]).float()
    num = (torch.einsum("bhid,bhjd->bhij", fq_r, fk_r) * allowed) @ v
    den = (torch.einsum("bhid,bhjd->bhij", fq, fk) * allowed).sum(-1, keepdim=True)
    torch.testing.assert_close(causal, num / (den + 1e-6), rtol=1e-4, atol=1e-5)


def test_ssa_with_stride_one_is_standard_attention():
    torch.manual_seed(0)
    ssa = SSA(24, 2, stride=1)
    x = torch.randn(2, 2 * 4 * 4, 24)
    out, _ = ssa(x, MixContext(grid=(2, 4, 4)))
    q, k, v = ssa.qkv(x).chunk(3, -1)
    heads = lambda t: t.view(2, 32, 2, 12).transpose(1, 2)  # noqa: E731
    att = torch.softmax(heads(q) @ heads(k).transpose(-1, -2) / 12**0.5, -1) @ heads(v)
    torch.testing.assert_close(out, ssa.out(att.transpose(1, 2).reshape(2, 32, 24)), rtol=1e-5, atol=1e-5)
    strided, _ = SSA(24, 2, stride=2)(x, MixContext(grid=(2, 4, 4)))
    assert strided.shape == x.shape


def test_depthwise_conv_matches_conv3d_and_is_causal():
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 5, 7, 6, 6), torch.randn(5, 3, 3, 3), torch.randn(5)
    ref = F.conv3d(x, w[:, None], b, padding=(0, 1, 1), groups=5)
    torch.testing.assert_close(depthwise_conv3d(x, w, b), ref, rtol=1e-4, atol=1e-5)
    lcha = LCHA(24, 2)
    tokens = torch.randn(1, 4 * 16, 24)
    out, _ = lcha.convolution(tokens, (4, 4, 4), None)
    changed = tokens.clone().view(1, 4, 16, 24)
    changed[:, 2:] += torch.randn_like(changed[:, 2:])  # perturb future frames 2, 3
    out2, _ = lcha.convolution(changed.view(1, 64, 24), (4, 4, 4), None)
    torch.testing.assert_close(out2[:, :32], out[:, :32])  # frames 0, 1 untouched
    assert not torch.allclose(out2[:, 32:], out[:, 32:])


@pytest.mark.parametrize("window", [None, 1])
def test_streaming_equals_block_causal_forward(window):
    model = _rand_model(ssa_window=window)
    x, sigma, d, text, mask = _inputs()
    with torch.no_grad():
        full = model(x, sigma, d, text, mask, causal=True)
        state = model.init_stream_state(2)
        chunks = []
        for c in range(5):
            xc = x[:, :, c : c + 1]
            chunks.append(model.forward_chunk(xc, sigma, d, text, mask, state))
            state = model.commit_chunk(xc, sigma, d, text, mask, state)
    torch.testing.assert_close(torch.cat(chunks, 2), full, rtol=1e-4, atol=1e-5)
    # and block-causal differs from bidirectional (the future matters there)
    with torch.no_grad():
        assert not torch.allclose(model(x, sigma, d, text, mask), full, atol=1e-4)


def test_save_and_load_round_trip(tmp_path):
    model = _rand_model()
    model.save_pretrained(str(tmp_path / "ckpt"))
    loaded = S2DiT.from_pretrained(str(tmp_path / "ckpt"))
    x, sigma, d, text, mask = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, sigma, d, text, mask), model(x, sigma, d, text, mask))
    assert loaded.config == model.config
    with pytest.raises(FileNotFoundError, match="holds no S2DiT"):
        S2DiT.from_pretrained(str(tmp_path / "missing"))


def test_block_costs_report_every_block():
    model = S2DiT(StudentConfig())
    costs = model.block_costs()
    assert [c["block"] for c in costs] == list(model.config.layout)
    assert all(c["params"] > 0 and c["flops"] > 0 for c in costs)
