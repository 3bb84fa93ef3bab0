"""Stage 2 (self-forcing -> S2DiT-AR): streaming sampling, the exit-step gradient, DMD and the
critic, exact resume, refusals, the CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from cache_factory import make_cache
from model_factory import random_model

from cache_schema import FingerprintMismatch
from pipeline.cli import main
from student_train.config import TrainConfig
from student_train.sampler import sample, sample_streaming
from student_train.self_forcing import ARConfig, ARTrainer, exit_steps, rollout
from student_train.self_forcing.losses import Renoise, critic_loss, dmd_loss, regression_loss
from student_train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

SIGMAS = [1.0, 0.9, 0.75, 0.5, 0.0]  # a 4-step schedule


def _kd_checkpoint(cache: str, out: Path) -> str:
    """A KD checkpoint with non-trivial weights (adaLN-zero would make a fresh model v = 0)."""
    trainer = Trainer(cache, str(out), TrainConfig(steps=1, batch_size=4,
                                                   model={"dim": 24, "heads": 2}))
    torch.manual_seed(1)
    for model in (trainer.model, trainer.ema):
        for p in model.parameters():
            p.data.normal_(0, 0.1)
    return trainer.checkpoint()


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return make_cache(tmp_path_factory.mktemp("ar") / "cache", seeds=2)


@pytest.fixture(scope="module")
def kd(cache, tmp_path_factory) -> str:
    return _kd_checkpoint(cache, tmp_path_factory.mktemp("kd") / "run")


def _inputs(batch=3, frames=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch, 4, frames, 8, 8, generator=g)
    text = torch.randn(batch, 6, 32, generator=g)
    mask = torch.ones(batch, 6, dtype=torch.bool)
    mask[0, 4:] = False
    return noise, text, mask


# -- sampling --------------------------------------------------------------------------------

def test_streaming_sampling_chunk_by_chunk_equals_full_causal_sampling():
    noise, text, mask = _inputs()
    model = random_model()
    full = sample(model, noise, text, mask, SIGMAS, causal=True)
    streamed = sample_streaming(model, noise, text, mask, SIGMAS, context_sigma=None)
    torch.testing.assert_close(streamed, full, rtol=1e-4, atol=1e-5)
    # chunks of 2 frames over 6 frames, rechunking the same weights
    noise6, _, _ = _inputs(frames=6)
    base = random_model(latent_frames=6)
    full2 = sample(random_model(latent_frames=6, chunk_frames=2), noise6, text, mask, SIGMAS, causal=True)
    streamed2 = sample_streaming(base, noise6, text, mask, SIGMAS, chunk_frames=2, context_sigma=None)
    torch.testing.assert_close(streamed2, full2, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(full2, sample(base, noise6, text, mask, SIGMAS, causal=True), atol=1e-3)


def test_clean_context_streaming_is_the_training_rollout_run_to_the_last_step():
    noise, text, mask = _inputs()
    model = random_model()
    clean = sample_streaming(model, noise, text, mask, SIGMAS)  # finished chunks committed at sigma 0
    with torch.no_grad():
        rolled = rollout(model, noise, text, mask, SIGMAS, [3] * 5, grad=False)
    torch.testing.assert_close(rolled, clean, rtol=0, atol=1e-6)
    noisy = sample_streaming(model, noise, text, mask, SIGMAS, context_sigma=None)
    torch.testing.assert_close(clean[:, :, :1], noisy[:, :, :1])  # the first chunk has no past
    assert not torch.allclose(clean[:, :, 4:], noisy[:, :, 4:], atol=1e-4)  # the context matters


def test_gradient_flows_only_through_the_exit_step():
    noise, text, mask = _inputs()
    model = random_model()
    calls: list[bool] = []
    inner = model.forward_chunk

    def recording(*args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return inner(*args, **kwargs)

    model.forward_chunk = recording
    exits = [2, 1, 3, 1, 2]
    leaf = noise.clone().requires_grad_(True)
    out = rollout(model, leaf, text, mask, SIGMAS, exits, grad=True)
    # one call per step up to the exit, one commit per chunk but the last; one with a gradient each
    assert len(calls) == sum(k + 1 for k in exits) + len(exits) - 1
    assert sum(calls) == len(exits)
    assert out.requires_grad
    (g_noise,) = torch.autograd.grad(out.square().sum(), leaf, retain_graph=True, allow_unused=True)
    assert g_noise is None  # the exit input came from no_grad steps: no path back to the noise
    out.square().sum().backward()
    assert all(p.grad is not None for p in model.blocks.parameters())
    # exiting at step 0, the exit input is the noise itself
    leaf0 = noise.clone().requires_grad_(True)
    out0 = rollout(model, leaf0, text, mask, SIGMAS, [0] * 5, grad=True)
    (g0,) = torch.autograd.grad(out0.sum(), leaf0)
    assert g0.abs().sum() > 0
    # exits are keyed by (seed, step, stream): the same for every rank and after a resume
    assert exit_steps(0, 7, 5, 4, per_chunk=True) == exit_steps(0, 7, 5, 4, per_chunk=True)
    assert len(set(exit_steps(0, 7, 5, 4, per_chunk=False))) == 1
    assert {k for s in range(40) for k in exit_steps(0, s, 5, 4, per_chunk=True)} == {0, 1, 2, 3}


# -- losses ----------------------------------------------------------------------------------

class _Shifted(torch.nn.Module):
    """A fake score whose velocity is the real one plus delta: x0_fake = x0_real - sigma delta."""

    def __init__(self, real, delta: float):
        super().__init__()
        self.real, self.delta = real, delta

    def forward(self, *args, **kwargs):
        return self.real(*args, **kwargs) + self.delta


def test_dmd_gradient_is_zero_when_the_critic_is_the_real_score_and_points_to_the_real_one():
    noise, text, mask = _inputs()
    real = random_model()
    generator = copy.deepcopy(real)
    for p in generator.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    g = torch.Generator().manual_seed(3)
    renoise = Renoise(torch.rand(3, generator=g) * 0.9 + 0.05, torch.randn(noise.shape, generator=g))
    x = rollout(generator, noise, text, mask, SIGMAS, [1] * 5, grad=True)
    loss, parts = dmd_loss(x, real, copy.deepcopy(real), text, mask, renoise)
    loss.backward()
    assert parts["dmd_grad_rms"] == 0.0
    assert all(torch.count_nonzero(p.grad) == 0 for p in generator.parameters() if p.grad is not None)
    critic = copy.deepcopy(real)
    with torch.no_grad():
        critic.blocks[0].mlp[0].weight.add_(0.1)
    generator.zero_grad()
    x = rollout(generator, noise, text, mask, SIGMAS, [1] * 5, grad=True)
    dmd_loss(x, real, critic, text, mask, renoise)[0].backward()
    assert any(torch.count_nonzero(p.grad) > 0 for p in generator.parameters() if p.grad is not None)
    # a critic that sees the samples lower than the real score does pushes them up
    leaf = x.detach().clone().requires_grad_(True)
    dmd_loss(leaf, real, _Shifted(real, 0.5), text, mask, renoise)[0].backward()
    assert (leaf.grad < 0).all()


def test_critic_and_generator_losses_decrease():
    noise, text, mask = _inputs(batch=4)
    real = random_model()
    g = torch.Generator().manual_seed(5)
    renoise = Renoise(torch.rand(4, generator=g) * 0.9 + 0.05, torch.randn(noise.shape, generator=g))
    with torch.no_grad():
        samples = rollout(real, noise, text, mask, SIGMAS, [3] * 5, grad=False)
    critic = copy.deepcopy(real).train()
    opt = torch.optim.AdamW(critic.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        loss = critic_loss(critic, samples, text, mask, renoise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0] and losses[-1] == min(losses)
    generator = copy.deepcopy(real).train()
    target = torch.randn(noise.shape, generator=g) * 0.3
    opt = torch.optim.AdamW(generator.parameters(), lr=2e-3)
    losses = []
    for step in range(15):
        x = rollout(generator, noise, text, mask, SIGMAS, exit_steps(0, step, 5, 4, per_chunk=True))
        loss = regression_loss(x, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]  # with a new random exit pattern every step


# -- the trainer -----------------------------------------------------------------------------

def _cfg(**kw) -> ARConfig:
    return ARConfig(**{"steps": 4, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 2,
                       "log_every": 1, "critic_steps": 2, "exit_per_chunk": True, "lr": 1e-3,
                       "critic_lr": 1e-3, **kw})


def test_killed_and_resumed_run_ends_with_the_same_weights(cache, kd, tmp_path):
    ARTrainer(kd, cache, str(tmp_path / "a"), _cfg()).run(progress=False)
    ARTrainer(kd, cache, str(tmp_path / "b"), _cfg()).run(progress=False, stop_after=3)  # "killed"
    resumed = ARTrainer(kd, cache, str(tmp_path / "b"), _cfg())
    assert resumed.step == 2  # the newest checkpoint before the interruption
    resumed.run(progress=False)
    a = ARTrainer(kd, cache, str(tmp_path / "a"), _cfg())
    b = ARTrainer(kd, cache, str(tmp_path / "b"), _cfg())
    assert a.step == b.step == 4
    for name in ("model", "ema", "critic"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        for key in sa:
            torch.testing.assert_close(sa[key], sb[key], rtol=1e-5, atol=1e-6)
    # the generator and the critic both moved away from the KD weights
    fresh = ARTrainer(kd, cache, str(tmp_path / "fresh"), _cfg())
    for name in ("model", "critic"):
        moved = [not torch.equal(v, getattr(fresh, name).state_dict()[k])
                 for k, v in getattr(a, name).state_dict().items()]
        assert any(moved)
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert {"regression_loss", "dmd_loss", "critic_loss", "grad_norm", "exit_step"} <= set(rows[0])
    state = json.loads((Path(a.out_url) / "checkpoints" / "step_000004" / "state.json").read_text())
    assert state["stage"] == "ar" and state["init"]["checkpoint"] == kd
    assert state["config"]["critic_steps"] == 2 and "critic_optim" in state["optimizers"]


def test_a_kd_checkpoint_that_does_not_fit_the_cache_is_refused(kd, tmp_path):
    other_shape = make_cache(tmp_path / "shape", seeds=1, latent_shape=(4, 4, 8, 8))
    with pytest.raises(ValueError, match="does not fit the cache.*latent_frames 5 \\(cache 4\\)"):
        ARTrainer(kd, other_shape, str(tmp_path / "x"), _cfg())
    other_teacher = make_cache(tmp_path / "fp", seeds=1, keep=(0, 2, 4, 6))
    with pytest.raises(FingerprintMismatch, match="different teachers"):
        ARTrainer(kd, other_teacher, str(tmp_path / "y"), _cfg())
    with pytest.raises(ValueError, match=r"\[train_ar\]"):
        ARConfig.load(str(Path(__file__).resolve().parents[2] / "configs" / "kd_demo.toml"))


def test_cli_help_and_a_tiny_run_then_streaming_eval(cache, kd, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "ar", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--init" in text and "DMD" in text and "s2dit train ar" in text
    config = tmp_path / "ar.toml"
    config.write_text("[train_ar]\nsteps = 2\nbatch_size = 4\ncritic_steps = 1\ncheckpoint_every = 2\n")
    out = tmp_path / "run"
    assert main(["train", "ar", "--init", str(Path(kd).parent.parent), "--cache", cache, "--out",
                 str(out), "--config", str(config), "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["checkpoint"].endswith("step_000002")
    assert main(["eval", "--checkpoint", str(out), "--per-class", "1"]) == 0
    report = capsys.readouterr().out
    assert "student_ar_4step_streaming" in report and "AR step 2" in report
    # an AR checkpoint is not a KD checkpoint to start from
    assert main(["train", "ar", "--init", str(out), "--cache", cache, "--out", str(tmp_path / "z"),
                 "--steps", "1", "--quiet"]) == 2
    assert "is an S2DiT-AR" in capsys.readouterr().err


@pytest.mark.slow  # ~60 s; the Ray Train path is one generic fit_on_ray, which test_train_kd's killed-worker test runs
def test_two_ray_train_workers_match_one_worker(cache, kd, tmp_path, ray_runtime):
    """Each rank rolls out half the global batch; averaged gradients give the one-worker step."""
    from student_train.launch import launch

    cfg = _cfg(steps=3, checkpoint_every=3)
    ARTrainer(kd, cache, str(tmp_path / "one"), cfg).run(progress=False)
    launch("ar", cfg, 2, out_url=str(tmp_path / "two"), init_url=kd, cache_url=cache,
           progress=False, storage_path=str(tmp_path / "ray_train"))
    one = ARTrainer(kd, cache, str(tmp_path / "one"), cfg)
    two = ARTrainer(kd, cache, str(tmp_path / "two"), cfg)
    assert one.step == two.step == 3
    for name in ("model", "ema", "critic"):
        a, b = getattr(one, name).state_dict(), getattr(two, name).state_dict()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="batch_size 4 must divide evenly over 3 workers"):
        launch("ar", cfg, 3, out_url=str(tmp_path / "three"), init_url=kd, cache_url=cache)
