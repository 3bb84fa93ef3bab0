"""A new training stage is one module and one registry call (issue 25): a toy stage defined
here (its config, its trainer on the loop core, its checkpoint contents, what it samples) is
registered with ``register_stage`` and then trained, checkpointed, resumed and sampled through
the stage API (``launch``, ``StudentCheckpoint``) without touching any project file."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from cache_factory import make_cache

from student_train.checkpoint import latest_checkpoint, load_checkpoint, split_prefix
from student_train.config import StageConfig
from student_train.launch import launch
from student_train.loop import Parts, Phase, Take, TrainLoop
from student_train.model import S2DiT
from student_train.optim import adamw, ema_update, optimiser_step
from student_train.precision import Precision
from student_train.stage_spec import TrainingStage, configured_context
from student_train.stages import STAGES, get_stage, register_stage, stage_names
from student_train.student import StudentCheckpoint
from student_train.text import pad_text
from student_train.trainer import student_config_for

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass(kw_only=True, slots=True)
class ToyConfig(StageConfig):
    """Flow matching at one noise level, from the cache's noise and x0 only."""

    TABLE: ClassVar[str] = "train_toy"

    sigma: float = 0.5
    context_sigma: float = 0.1  # what its streaming sampler commits finished chunks at
    model: dict[str, Any] = field(default_factory=lambda: {"dim": 16, "heads": 2})


class ToyTrainer(TrainLoop):
    DESC, RESUMES, PROGRESS_KEYS = "toy", ("toy",), ("loss",)

    def __init__(self, cache_url: str, out_url: str, config: ToyConfig, *, rank: int = 0,
                 world_size: int = 1):
        super().__init__(out_url, config, rank=rank, world_size=world_size)
        self.open_cache(cache_url, ("noise", "x0", "text_emb"))
        torch.manual_seed(config.seed)
        self.model_config = student_config_for(self.layout, config.model)
        self.model = S2DiT(self.model_config)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.opt = adamw(self.model, config.lr, config.betas, config.weight_decay)
        self.precision = Precision(self.device, None)
        self.plan = {"schedule_sigmas": [1.0, 0.5, 0.0], "grid_sigmas": [1.0, 0.75, 0.5, 0.25, 0.0]}
        self.step = 0
        self.resume()

    def phases(self) -> list[Phase]:
        return [Phase("toy", self.cfg.steps, lambda: self.step, self.train_step, self.cfg.batch_size)]

    def train_step(self, take: Take) -> dict[str, Any]:
        records = take(self.cfg.batch_size)
        x0 = torch.from_numpy(np.stack([r["x0"] for r in records])).float()
        noise = torch.from_numpy(np.stack([r["noise"] for r in records])).float()
        text, mask = pad_text(records, self.layout.max_text_len)
        s = self.cfg.sigma
        sigma, d = torch.full((len(records),), s), torch.zeros(len(records))
        v = self.model((1 - s) * x0 + s * noise, sigma, d, text, mask)  # (B, C, F, H, W)
        loss = torch.nn.functional.mse_loss(v, noise - x0)
        grad_norm = optimiser_step(self.opt, self.precision, loss, self.model, self.cfg.grad_clip)
        ema_update(self.ema, self.model, self.cfg.ema_decay)
        self.step += 1
        return {"loss": loss.item(), "grad_norm": grad_norm}

    def restore(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        from student_train.checkpoint import restore_optimizer

        self.model.load_state_dict(split_prefix(tensors, "model"))
        self.ema.load_state_dict(split_prefix(tensors, "ema"))
        restore_optimizer(self.opt, tensors, state)
        self.step = int(state["step"])

    def checkpoint_stage(self) -> str:
        return "toy"

    def checkpoint_parts(self) -> Parts:
        return Parts(self.model, self.ema, self.opt, {})


def build_toy(config: ToyConfig, out_url: str, *, cache_url: str, rank: int = 0,
              world_size: int = 1) -> ToyTrainer:
    return ToyTrainer(cache_url, out_url, config, rank=rank, world_size=world_size)


TOY = TrainingStage(name="toy", title="S2DiT-toy", config=ToyConfig, build=build_toy,
                    inputs=("cache_url",), checkpoints=("toy",), streams=("toy",),
                    context_sigma=configured_context)


@pytest.fixture
def toy_stage():
    register_stage(TOY)  # the one registry call a new stage needs
    yield TOY
    STAGES.unregister(TOY.name)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return make_cache(tmp_path_factory.mktemp("toy") / "cache", seeds=1)


def _config(steps: int) -> ToyConfig:
    return ToyConfig(steps=steps, batch_size=4, checkpoint_every=2, log_every=1, warmup_steps=1)


def test_a_toy_stage_trains_resumes_and_samples_through_the_stage_api(toy_stage, cache, tmp_path):
    assert "toy" in stage_names() and get_stage("toy") is toy_stage
    # trained in two calls (the second resumes from the first's checkpoint) ...
    out = str(tmp_path / "toy")
    first = launch("toy", _config(2), out_url=out, cache_url=cache, progress=False)
    assert first.checkpoint.endswith("step_000002") and first.resumed_from is None
    lines: list[str] = []
    second = launch("toy", _config(4), out_url=out, cache_url=cache, progress=False,
                    log=lines.append)
    assert second.resumed_from == first.checkpoint and second.checkpoint.endswith("step_000004")
    assert lines == [f"resuming from {first.checkpoint} (step 2 of 4)"]
    assert second.phase_steps == {"toy": 4}
    # ... ends where one uninterrupted call ends
    whole = launch("toy", _config(4), out_url=str(tmp_path / "whole"), cache_url=cache,
                   progress=False)
    resumed, uninterrupted = load_checkpoint(second.checkpoint), load_checkpoint(whole.checkpoint)
    assert resumed[1]["stage"] == "toy" and resumed[1]["loader"] == uninterrupted[1]["loader"]
    for key, value in uninterrupted[0].items():
        assert torch.equal(resumed[0][key], value), key
    # sampled as its spec says: chunk by chunk, committing at its trained context sigma
    student = StudentCheckpoint.load(out)
    assert student.url == latest_checkpoint(out) and student.spec is toy_stage
    assert (student.stage, student.step, student.streams) == ("toy", 4, True)
    assert student.context_sigma == 0.1
    assert student.trained_manifest().cache_id == student.manifest_info["cache_id"]
    config = student.model.config
    noise = torch.randn(2, config.latent_channels, config.latent_frames, config.latent_height,
                        config.latent_width, generator=torch.Generator().manual_seed(0))
    text = torch.randn(2, 3, config.text_dim)
    mask = torch.ones(2, 3, dtype=torch.bool)
    sigmas = student.plan["schedule_sigmas"]
    chunks = list(student.chunks(noise, text, mask, sigmas))
    assert len(chunks) == config.latent_frames // config.chunk_frames
    streamed = student.sample(noise, text, mask, sigmas)
    assert torch.equal(torch.cat(chunks, dim=2), streamed)
    whole_clip = student.sample(noise, text, mask, sigmas, streaming=False)
    assert whole_clip.shape == noise.shape and torch.isfinite(whole_clip).all()


def test_a_second_stage_cannot_claim_another_stages_name_or_checkpoints(toy_stage):
    with pytest.raises(ValueError, match="already registered"):
        register_stage(toy_stage)
    thief = TrainingStage(name="thief", title="thief", config=ToyConfig, build=build_toy,
                          inputs=("cache_url",), checkpoints=("kd",))
    with pytest.raises(ValueError, match=r"\['kd'\] already belong to 'kd'"):
        register_stage(thief)
    with pytest.raises(ValueError, match="unknown training stage 'nope'"):
        get_stage("nope")
