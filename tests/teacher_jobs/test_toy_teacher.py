"""A new teacher kind is one file and one registry call (issues 13 and 14): a toy kind defined
here, in the test, and registered with ``register_teacher`` runs a real Ray job
(generate -> verify -> read) without touching any project file."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from cache_schema import CacheReader, flow, load_manifest
from cache_schema.verify import verify_cache
from teacher_jobs.config import JobConfig
from teacher_jobs.job import run_generation
from teacher_jobs.sampler import record_trajectories
from teacher_jobs.teachers import TEACHERS, register_teacher
from teacher_jobs.teachers.base import EncodedText, Teacher
from teacher_jobs.teachers.spec import DriverPlan, TeacherSettings, VideoSize
from teacher_jobs.teachers.video_limits import SizeGrid, VideoLimits

TEXT_DIM, MAX_TOKENS = 6, 8


def _word_vector(word: str) -> np.ndarray:
    seed = int(hashlib.sha256(word.encode()).hexdigest()[:8], 16)
    return np.random.default_rng(seed).standard_normal(TEXT_DIM).astype(np.float32)


class ToyTeacher(Teacher):
    """Velocity = pull towards a prompt-dependent constant latent (cond) or towards zero
    (uncond); the text embedding is one hashed vector per word."""

    name = "toy"

    def __init__(self, latent_shape: tuple[int, int, int, int], steps: int, shift: float, pull: float):
        self.latent_shape, self.num_steps, self.pull, self.shift = latent_shape, steps, pull, shift
        self.text_dim, self.max_text_len = TEXT_DIM, MAX_TOKENS
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self.guidance = (2.0,)
        self._sigmas = flow.euler_sigmas(steps, shift)

    def fingerprint(self) -> dict[str, Any]:
        return {"teacher": "toy", "latent_shape": list(self.latent_shape), "steps": self.num_steps,
                "shift": self.shift, "pull": self.pull}

    def count_tokens(self, prompt: str) -> int:
        return len(prompt.split()) + 1

    def encode_prompts(self, prompts: list[str]) -> EncodedText:
        emb = np.zeros((len(prompts), MAX_TOKENS, TEXT_DIM), np.float32)
        lengths = []
        for b, prompt in enumerate(prompts):
            tokens = [*prompt.split(), "</s>"][:MAX_TOKENS]  # an end token: "" has one token
            for i, word in enumerate(tokens):
                emb[b, i] = _word_vector(word)
            lengths.append(len(tokens))
        return EncodedText(emb=torch.from_numpy(emb), lengths=lengths, prompts=list(prompts))

    def velocity(self, x, step, text, neg_text):
        target = text.emb.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)  # (B,) -> broadcast latent
        return self.pull * (x - target), self.pull * x

    def sigmas(self) -> np.ndarray:
        return self._sigmas


@dataclass(kw_only=True, slots=True)
class ToySettings(TeacherSettings):
    kind: ClassVar[str] = "toy-test"
    pull: float = 0.5
    steps: int = 3

    def video_limits(self, video: VideoSize) -> VideoLimits:
        """Latents of pixels / 8 (at least one) and frames / 4 (4k+1), as _teacher maps them."""
        side = SizeGrid(step=8, lo=8, why_step="latent pixels of 8")
        return VideoLimits(teacher="the toy teacher", height=side, width=side,
                           frames=SizeGrid(step=4, offset=1, why_step="latent frames of 4"))

    def _teacher(self, video: VideoSize) -> ToyTeacher:
        shape = (2, (video.frames - 1) // 4 + 1, video.height // 8, video.width // 8)
        return ToyTeacher(shape, self.steps, self.shift, self.pull)

    def build(self, video: VideoSize, *, device: str) -> ToyTeacher:
        return self._teacher(video)

    def driver_plan(self, video: VideoSize) -> DriverPlan:
        teacher = self._teacher(video)
        return DriverPlan(fingerprint=teacher.fingerprint(),
                          layout_args={"latent_shape": teacher.latent_shape, "num_steps": teacher.num_steps,
                                       "text_dim": TEXT_DIM, "max_text_len": MAX_TOKENS},
                          max_tokens=MAX_TOKENS, count_tokens=teacher.count_tokens)


@pytest.fixture
def toy_kind():
    """The one registry call; Ray ships this module's classes by value (the actors cannot
    import a test file), and the kind is removed afterwards so other tests see the builtins."""
    import ray.cloudpickle

    assert "toy-test" not in TEACHERS
    register_teacher(ToySettings)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ToySettings
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    TEACHERS.unregister("toy-test")


def test_a_teacher_kind_defined_in_a_test_runs_generate_verify_read(toy_kind, tmp_path, ray_runtime):
    corpus = tmp_path / "prompts.txt"
    corpus.write_text("a red cat\nblue ocean wave\na dog running left fast\n"
                      + "far too many words for this toy encoder\n")
    output = str(tmp_path / "toy-cache")
    toml = tmp_path / "toy.toml"
    toml.write_text(f'[job]\nprompts = "{corpus}"\noutput = "{output}"\nheight = 16\nwidth = 16\n'
                    'frames = 5\nsamples_per_shard = 2\nkeep_steps = "all"\nnum_actors = 1\n\n'
                    '[job.teacher]\nkind = "toy-test"\npull = 0.25\nguidance = 2.0\n')
    config = JobConfig.load(str(toml), teacher={"steps": 4})  # TOML section, then a flag
    assert isinstance(config.teacher, ToySettings) and config.teacher.steps == 4
    result = run_generation(config, progress=False)
    assert result.ok, result.report["units_failed"]
    assert [r["line"] for r in result.report["corpus_rejections"]] == [4]  # over MAX_TOKENS
    assert all(t["device"].startswith("cpu") for t in result.report["telemetry"])  # where units ran
    assert verify_cache(output, deep=True).ok
    manifest = load_manifest(output)
    assert manifest.fingerprint["teacher"] == "toy" and manifest.fingerprint["pull"] == 0.25
    assert manifest.num_samples == 3 and manifest.layout.latent_shape == (2, 2, 2, 2)
    read = {r["prompt"]: r for r in CacheReader(output).iter_records(
        fields=["prompt", "seed", "states", "v_cond", "x0", "text_emb"])}
    assert sorted(read) == ["a dog running left fast", "a red cat", "blue ocean wave"]
    # what was read back is what the toy teacher records in process, byte for byte
    teacher = config.teacher.build(config.video, device="cpu")
    prompts = sorted(read)
    mine, _ = record_trajectories(teacher, prompts, [read[p]["seed"] for p in prompts],
                                  global_seed=config.seed, keep_steps=config.keep_step_indices,
                                  negative_prompt="", fingerprint_digest=manifest.fingerprint_digest)
    for rec in mine:
        got = read[rec["prompt"]]
        for name in ("states", "v_cond", "x0", "text_emb"):
            assert np.asarray(got[name]).tobytes() == np.asarray(rec[name]).tobytes(), name
    assert read["a red cat"]["text_emb"].shape == (4, TEXT_DIM)
