"""S2DiT building blocks against naive references, streaming equivalence, persistence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_factory import random_model

from student_train.model import S2DiT, StudentConfig
from student_train.model.blocks import MixContext, text_attention_bias
from student_train.model.lcha import LCHA, causal_depthwise_conv
from student_train.model.ssa import SSA

pytestmark = pytest.mark.usefixtures("one_thread")


def _inputs(b=2, f=5):
    torch.manual_seed(1)
    mask = torch.ones(b, 6, dtype=torch.bool)
    mask[0, 4:] = False
    return torch.randn(b, 4, f, 8, 8), torch.rand(b), torch.rand(b), torch.randn(b, 6, 32), mask


def _ctx(grid, dim=24, heads=2, causal=False, chunk=1, b=2):
    cond = torch.randn(b, dim)
    return MixContext(grid=grid, cond=cond, text_bias=text_attention_bias(torch.ones(b, 1, dtype=torch.bool), cond.dtype),
                      head_dim=dim // heads, causal=causal, chunk_token_frames=chunk)


def test_linear_attention_equals_quadratic_reference():
    torch.manual_seed(0)
    lcha = LCHA(24, 2)
    x = torch.randn(2, 3 * 4 * 4, 24)
    grid = (3, 4, 4)
    fq_r, fq, fk_r, fk, v = (t.transpose(1, 2) for t in lcha.features(x, _ctx(grid)))  # (B, H, T, d)
    assert (fq > 0).all() and (fk > 0).all()  # softplus features: a positive kernel
    out, _ = lcha.attention(x, _ctx(grid))
    # naive O(T^2): explicit pairwise kernel weights k(i, j) = rope(phi(q_i)) . rope(phi(k_j))
    num = torch.einsum("bhid,bhjd->bhij", fq_r, fk_r) @ v
    den = torch.einsum("bhid,bhjd->bhij", fq, fk).sum(-1, keepdim=True)
    ref = (num / (den + 1e-6)).transpose(1, 2).flatten(2)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    # block-causal (chunks of one frame): chunk n attends to chunks <= n only
    causal, _ = lcha.attention(x, _ctx(grid, causal=True))
    chunk = torch.arange(3).repeat_interleave(16)
    allowed = (chunk[:, None] >= chunk[None, :]).float()
    num = (torch.einsum("bhid,bhjd->bhij", fq_r, fk_r) * allowed) @ v
    den = (torch.einsum("bhid,bhjd->bhij", fq, fk) * allowed).sum(-1, keepdim=True)
    ref = (num / (den + 1e-6)).transpose(1, 2).flatten(2)
    torch.testing.assert_close(causal, ref, rtol=1e-4, atol=1e-5)


def test_ssa_with_stride_one_is_standard_attention():
    torch.manual_seed(0)
    ssa = SSA(24, 2, stride=1)
    x = torch.randn(2, 2 * 4 * 4, 24)
    ctx = _ctx((2, 4, 4))
    out, _ = ssa(x, ctx)
    q, k, v = ssa.project(x, ctx)  # (B, H, T, d): the module's own normalised, rotated q, k
    att = torch.softmax(q @ k.transpose(-1, -2) / 12**0.5, -1) @ v
    torch.testing.assert_close(out, ssa.out(att.transpose(1, 2).reshape(2, 32, 24)), rtol=1e-5, atol=1e-5)


def test_ssa_stride_pools_qkv_and_upsamples():
    torch.manual_seed(0)
    ssa = SSA(24, 2, stride=2)
    x = torch.randn(2, 2 * 4 * 4, 24)
    out, _ = ssa(x, _ctx((2, 4, 4)))
    assert out.shape == x.shape
    grid = out.view(2, 2, 4, 4, 24)
    # nearest upsampling: each 2x2 block of tokens carries one reduced token's output
    torch.testing.assert_close(grid[:, :, 0::2, 0::2], grid[:, :, 1::2, 1::2])
    # and pooling first equals projecting first (the projection is linear)
    pooled = x.view(2, 2, 2, 2, 2, 2, 24).mean((3, 5)).reshape(2, 8, 24)
    torch.testing.assert_close(ssa.qkv(pooled),
                               ssa.qkv(x).view(2, 2, 2, 2, 2, 2, 72).mean((3, 5)).reshape(2, 8, 72),
                               rtol=1e-5, atol=1e-5)


def test_depthwise_conv_matches_conv3d_and_is_causal():
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 7, 6, 6, 5), torch.randn(5, 3, 3, 3), torch.randn(5)
    out, tail = causal_depthwise_conv(x, torch.zeros(2, 2, 6, 6, 5), w, b)
    vol = x.permute(0, 4, 1, 2, 3)  # (B, C, F, H, W)
    ref = F.conv3d(F.pad(vol, (0, 0, 0, 0, 2, 0)), w[:, None], b, padding=(0, 1, 1), groups=5)
    torch.testing.assert_close(out, ref.permute(0, 2, 3, 4, 1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(tail, x[:, -2:])
    # the LCHA conv branch never reads future frames
    lcha = LCHA(24, 2)
    tokens = torch.randn(1, 4 * 16, 24)
    ctx = _ctx((4, 4, 4), b=1)
    out, _ = lcha.convolution(tokens, ctx)
    changed = tokens.clone().view(1, 4, 16, 24)
    changed[:, 2:] += torch.randn_like(changed[:, 2:])  # perturb future frames 2, 3
    out2, _ = lcha.convolution(changed.view(1, 64, 24), ctx)
    torch.testing.assert_close(out2[:, :32], out[:, :32])  # frames 0, 1 untouched
    assert not torch.allclose(out2[:, 32:], out[:, 32:])


@pytest.mark.parametrize("grid", [(2, 2), (1, 3), (6, 6)])
def test_depthwise_conv_on_grids_smaller_than_its_kernel_matches_conv3d_with_gradients(grid):
    # grids below the 3x3 kernel take the pre-padded path (the memory task's 2x2 tokens)
    torch.manual_seed(1)
    h, w = grid
    x = torch.randn(3, 5, h, w, 4, requires_grad=True)
    wt, b = torch.randn(4, 3, 3, 3, requires_grad=True), torch.randn(4)
    out, _ = causal_depthwise_conv(x, torch.zeros(3, 2, h, w, 4), wt, b)
    vol = x.permute(0, 4, 1, 2, 3)
    ref = F.conv3d(F.pad(vol, (0, 0, 0, 0, 2, 0)), wt[:, None], b, padding=(0, 1, 1), groups=4)
    ref = ref.permute(0, 2, 3, 4, 1)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, wt), grad)
    want = torch.autograd.grad(ref, (x, wt), grad)
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)


def test_block_causal_model_ignores_future_chunks():
    model = random_model(chunk_frames=1)
    x, sigma, d, text, mask = _inputs()
    changed = x.clone()
    changed[:, :, 3:] += torch.randn_like(changed[:, :, 3:])
    with torch.no_grad():
        a, b = model(x, sigma, d, text, mask, causal=True), model(changed, sigma, d, text, mask, causal=True)
        bidir = model(changed, sigma, d, text, mask)
    torch.testing.assert_close(a[:, :, :3], b[:, :, :3])
    assert not torch.allclose(a[:, :, 3:], b[:, :, 3:])
    assert not torch.allclose(bidir[:, :, :3], a[:, :, :3], atol=1e-4)  # bidirectional sees them


@pytest.mark.parametrize("window,chunk_frames,frames,layout", [
    (None, 1, 5, None), (1, 1, 5, None), (0, 2, 6, None),
    (None, 1, 5, ("conv", "lin", "ssa:1", "conv")), (2, 1, 5, ("ssa:1", "ssa:2")),
    (1, 1, 6, ("ssa:1", "sink")), (1, 2, 8, ("lcha", "ssa:2", "sink"))])
def test_streaming_equals_block_causal_forward(window, chunk_frames, frames, layout):
    sink = bool(layout) and layout[-1] == "sink"  # a window plus the first chunk as a sink
    layout = layout[:-1] if sink else layout
    kw = {"layout": layout, "ssa_sink": sink} if layout else {}
    model = random_model(ssa_window=window, chunk_frames=chunk_frames, latent_frames=frames, **kw)
    x, sigma, d, text, mask = _inputs(f=frames)
    with torch.no_grad():
        full = model(x, sigma, d, text, mask, causal=True)
        state = model.init_stream_state(2)
        chunks = []
        for c in range(0, frames, chunk_frames):
            xc = x[:, :, c : c + chunk_frames]
            before = [t.clone() for t in state.flatten()[0]]
            v, _ = model.forward_chunk(xc, sigma, d, text, mask, state)
            v_again, _ = model.forward_chunk(xc, sigma, d, text, mask, state)
            torch.testing.assert_close(v, v_again)  # denoising steps do not advance the state
            assert all(torch.equal(a, b) for a, b in zip(before, state.flatten()[0]))
            chunks.append(v)
            # commit the chunk as the full sequence sees it (same sigma, d)
            state = model.forward_chunk(xc, sigma, d, text, mask, state)[1]
    torch.testing.assert_close(torch.cat(chunks, 2), full, rtol=1e-4, atol=1e-5)
    assert int(state.frame_offset) == frames


def test_commit_chunk_runs_at_context_noise_with_zero_step():
    model = random_model()
    x, _, _, text, mask = _inputs()
    xc = x[:, :, :1]
    noise = torch.randn(xc.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        committed = model.commit_chunk(xc, text, mask, model.init_stream_state(2), sigma=0.1,
                                       noise=noise)
        # the chunk is noised to the level it is labelled with (DESIGN 4.1), then seen with d = 0
        _, expected = model.forward_chunk(0.9 * xc + 0.1 * noise, torch.full((2,), 0.1), torch.zeros(2),
                                          text, mask, model.init_stream_state(2))
        with pytest.raises(ValueError, match="context noise"):
            model.commit_chunk(xc, text, mask, model.init_stream_state(2), sigma=0.1)
    for a, b in zip(committed.flatten()[0], expected.flatten()[0]):
        torch.testing.assert_close(a, b)


def test_gradients_flow_to_every_parameter():
    model = random_model()
    x, sigma, d, text, mask = _inputs()
    model(x, sigma, d, text, mask).square().mean().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead


def test_save_and_load_round_trip(tmp_path):
    model = random_model(layout=("lcha", "ssa:2", "ssa:1", "lcha"), ssa_window=2)
    model.save_pretrained(str(tmp_path / "ckpt"))
    loaded = S2DiT.from_pretrained(f"file://{tmp_path}/ckpt")
    x, sigma, d, text, mask = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, sigma, d, text, mask), model(x, sigma, d, text, mask))
    assert loaded.config == model.config
    model.config.save(str(tmp_path / "c.json"))
    assert StudentConfig.load(str(tmp_path / "c.json")) == model.config
    with pytest.raises(FileNotFoundError, match="holds no S2DiT"):
        S2DiT.from_pretrained(str(tmp_path / "missing"))


@pytest.mark.parametrize("layout,conv_kernel,window,reach", [
    (("conv",) * 4, (3, 3, 3), None, 8),  # each conv reads kt - 1 = 2 frames back
    (("ssa:1",) * 4, (3, 3, 3), 2, 8),  # each windowed SSA reads 2 chunks back
    (("ssa:1",) * 3, (3, 3, 3), 0, 0),  # per frame
    (("conv", "ssa:1", "ssa:1"), (2, 3, 3), 0, 1),  # previous frame only
])
def test_local_mixers_see_exactly_their_stacked_reach(layout, conv_kernel, window, reach):
    """The sanity students of the memory task: a frame depends on exactly the last ``reach``
    frames, in block-causal and (for windows) bidirectional-band mode alike."""
    frames = 12
    model = random_model(layout=layout, conv_kernel=conv_kernel, ssa_window=window, latent_frames=frames)
    x, sigma, d, text, mask = _inputs(f=frames)
    t = frames - 1
    for dist in (reach, reach + 1):
        changed = x.clone()
        changed[:, :, t - dist] += 10.0
        with torch.no_grad():
            moved = (model(changed, sigma, d, text, mask, causal=True)
                     - model(x, sigma, d, text, mask, causal=True))[:, :, t].abs().max()
        assert (moved > 1e-9) == (dist <= reach), (layout, dist, float(moved))


def test_config_rejects_bad_layouts():
    with pytest.raises(ValueError, match="unknown block"):
        StudentConfig(layout=("lcha", "mamba"))
    with pytest.raises(ValueError, match="does not divide"):
        StudentConfig(layout=("lcha", "ssa:3"))
    with pytest.raises(ValueError, match="unknown student config keys"):
        StudentConfig.from_json({"dims": 3})


def test_block_costs_report_every_block():
    model = S2DiT(StudentConfig())
    costs = model.block_costs()
    assert [c["block"] for c in costs] == list(model.config.layout)
    assert sum(c["params"] for c in costs) < model.num_params()
    assert all(c["params"] > 0 and c["flops"] > 0 for c in costs)
    lcha, ssa = costs[0]["flops"], costs[1]["flops"]
    assert ssa < lcha  # SSA:2 projects a quarter of the tokens
    # linear attention: doubling the clip doubles an LCHA block's FLOPs (within 10%)
    double = model.block_costs(frames=2 * model.config.latent_frames)[0]["flops"]
    assert 1.9 < double / lcha < 2.1
