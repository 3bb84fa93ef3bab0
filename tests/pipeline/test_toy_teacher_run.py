"""A teacher is one plug-in, both sides (issue 25): a toy kind defined here, job side and
sampling side, added with one ``register_teacher`` call, goes through the whole `s2dit run`
graph (Ray cache, verify, tag, S2DiT-KD, S2DiT-AR, text to video, report) without touching any
project file. It has no oracle, so the run asks the registry and skips the scores."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

import fsspec
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from rich.console import Console

from cache_schema import flow
from pipeline.graph import load_run_config
from pipeline.run_api import run_config
from teacher_jobs.teachers import TEACHERS, register_teacher
from teacher_jobs.teachers.base import EncodedText, Teacher
from teacher_jobs.teachers.sampling import SamplingSide
from teacher_jobs.teachers.spec import DriverPlan, TeacherSettings, VideoSize
from teacher_jobs.teachers.video_limits import SizeGrid, VideoLimits

KIND, TEXT_DIM, MAX_TOKENS, SCALE = "toy-run", 6, 8, 4


class ToyTeacher(Teacher):
    """Velocity = pull towards a prompt-dependent constant latent (cond) or towards zero
    (uncond); the text embedding is one hashed vector per word."""

    name = KIND

    def __init__(self, latent_shape: tuple[int, ...], steps: int, shift: float, pull: float):
        self.latent_shape, self.num_steps = tuple(latent_shape), steps
        self.shift, self.pull, self.guidance = shift, pull, (2.0,)
        self.text_dim, self.max_text_len = TEXT_DIM, MAX_TOKENS
        self.device, self.dtype = torch.device("cpu"), torch.float32

    @classmethod
    def from_fingerprint(cls, fingerprint: dict[str, Any]) -> ToyTeacher:
        return cls(fingerprint["latent_shape"], fingerprint["steps"], fingerprint["shift"],
                   fingerprint["pull"])

    def fingerprint(self) -> dict[str, Any]:
        return {"teacher": KIND, "latent_shape": list(self.latent_shape), "steps": self.num_steps,
                "shift": self.shift, "pull": self.pull}

    def count_tokens(self, prompt: str) -> int:
        return len(prompt.split()) + 1

    def encode_prompts(self, prompts: list[str]) -> EncodedText:
        emb = np.zeros((len(prompts), MAX_TOKENS, TEXT_DIM), np.float32)
        lengths = []
        for b, prompt in enumerate(prompts):
            tokens = [*prompt.split(), "</s>"][:MAX_TOKENS]
            for i, word in enumerate(tokens):
                seed = int(hashlib.sha256(word.encode()).hexdigest()[:8], 16)
                emb[b, i] = np.random.default_rng(seed).standard_normal(TEXT_DIM)
            lengths.append(len(tokens))
        return EncodedText(emb=torch.from_numpy(emb), lengths=lengths, prompts=list(prompts))

    def velocity(self, x, step, text, neg_text):
        target = text.emb.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)
        return self.pull * (x - target), self.pull * x

    def sigmas(self) -> np.ndarray:
        return flow.euler_sigmas(self.num_steps, self.shift)


class GreyRenderer:
    """Each latent pixel's channel mean as a grey SCALE x SCALE block, chunk by chunk."""

    mode = "grey blocks, chunk by chunk"

    def push(self, latents: torch.Tensor) -> np.ndarray:
        grey = (latents.float().mean(1).clamp(-2, 2) / 4 + 0.5) * 255  # (B, f, H, W)
        frames = grey.round().to(torch.uint8).numpy()[..., None].repeat(3, -1)
        return frames.repeat(SCALE, axis=-3).repeat(SCALE, axis=-2)

    def finish(self) -> None:
        return None


class ToySide(SamplingSide):
    kind, fps = KIND, 8.0

    def __init__(self, fingerprint: dict[str, Any]):
        self.text = ToyTeacher.from_fingerprint(fingerprint)

    def renderer(self, height: int, width: int) -> GreyRenderer:
        return GreyRenderer()


@dataclass(kw_only=True, slots=True)
class ToySettings(TeacherSettings):
    kind: ClassVar[str] = KIND
    pull: float = 0.5
    steps: int = 3

    def video_limits(self, video: VideoSize) -> VideoLimits:
        """Latents of pixels / 8 (at least one) and frames / 4 (4k+1), as build maps them."""
        side = SizeGrid(step=8, lo=8, why_step="latent pixels of 8")
        return VideoLimits(teacher="the toy teacher", height=side, width=side,
                           frames=SizeGrid(step=4, offset=1, why_step="latent frames of 4"))

    def build(self, video: VideoSize, *, device: str) -> ToyTeacher:
        shape = (2, (video.frames - 1) // 4 + 1, video.height // 8, video.width // 8)
        return ToyTeacher(shape, self.steps, self.shift, self.pull)

    def driver_plan(self, video: VideoSize) -> DriverPlan:
        teacher = self.build(video, device="cpu")
        return DriverPlan(fingerprint=teacher.fingerprint(),
                          layout_args={"latent_shape": teacher.latent_shape, "num_steps": teacher.num_steps,
                                       "text_dim": TEXT_DIM, "max_text_len": MAX_TOKENS},
                          max_tokens=MAX_TOKENS, count_tokens=teacher.count_tokens)

    @classmethod
    def sampling_side(cls, fingerprint: dict[str, Any], *, source: str | None = None,
                      device: str = "cpu", dtype: str = "float32") -> ToySide:
        return ToySide(fingerprint)


@pytest.fixture
def toy_kind():
    """The one registry call; Ray ships this module's classes by value (the actors cannot
    import a test file); the kind is removed afterwards."""
    import ray.cloudpickle

    register_teacher(ToySettings)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ToySettings
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    TEACHERS.unregister(KIND)


RUN = f"""
[corpus]
kind = "inline"
prompts = ["a red cat", "blue ocean wave", "a dog running left", "green car moving up"]

[job]
samples_per_shard = 4
height = 32
width = 32
frames = 9
seeds_per_prompt = 2
num_actors = 1

[job.teacher]
kind = "{KIND}"
steps = 4
pull = 0.25

[train]
steps = 6
batch_size = 4
lr = 0.01
warmup_steps = 1
checkpoint_every = 3
log_every = 1

[train.model]
dim = 24
heads = 2

[train_ar]
causal_steps = 2
steps = 2
batch_size = 2
warmup_steps = 1
checkpoint_every = 2
log_every = 1

[sample]
count = 2
"""


@pytest.mark.slow
def test_a_teacher_defined_in_a_test_runs_the_whole_graph_and_its_report(toy_kind, tmp_path,
                                                                        ray_runtime):
    config_path = tmp_path / "toy_run.toml"
    config_path.write_text(RUN)
    out = tmp_path / "run"
    state = run_config(load_run_config(str(config_path)), out=str(out),
                       console=Console(quiet=True), progress=False).stages
    status = {name: record["status"] for name, record in state.items()}
    assert status == {**{n: "done" for n in state}, "eval_kd": "skipped", "eval_ar": "skipped"}
    assert f"'{KIND}'" in state["eval_kd"]["reason"] and "oracle" in state["eval_kd"]["reason"]
    assert state["generate"]["outputs"]["teacher"] == KIND
    sidecar = json.loads((out / "preview" / "preview.json").read_text())
    assert sidecar["teacher"] == KIND and sidecar["stage"] == "ar" and sidecar["scores"] is None
    for url in sidecar["outputs"]["videos"]:  # rendered by the toy's sampling side
        with fsspec.open(url, "rb") as handle:
            video = iio.imread(handle.read(), plugin="FFMPEG", extension=".mp4")
        assert video.shape == (3, 4 * SCALE, 4 * SCALE, 3)
    report = (out / "report.html").read_text()
    assert 'id="cache-previews"' in report  # the cache card's x0 strips, by the toy's side
    assert f"({KIND})" in report  # the cached-sample grid, rendered by the toy's side
    assert report.count("<video") >= 3 * 3  # 3 cached prompts x (teacher, KD, AR)
