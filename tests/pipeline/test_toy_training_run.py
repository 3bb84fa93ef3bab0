"""A training stage is a whole plug-in of the run graph (issue 25): a toy stage defined here (its
config, its trainer on the loop core, its spec) is added with one ``register_training_stage``
call (the trainers' registry and the graph stage derived from the spec), and `s2dit run` then
lists it in its help and --plan, runs it, records its fingerprint, resumes it when interrupted,
samples its student, reports it, leaves it when up to date and skips it when disabled, without
touching any project file. And the registered built-in stages run in the order they always did,
their graph stages derived from their specs."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from rich.console import Console

from cache_schema import CacheWriter
from pipeline.cli import main
from pipeline.graph import STAGE_NAMES, RunConfigError, load_run_config
from pipeline.graph.fingerprint import digest
from pipeline.graph.registry import register_graph_stage, registered_stages, unregister_graph_stage
from pipeline.graph.stage import Stage
from pipeline.graph.stages import SECTIONS, STAGES
from pipeline.graph.stages.training import register_training_stage, unregister_training_stage
from pipeline.run_api import plan_config
from student_train.checkpoint import restore_optimizer, split_prefix
from student_train.config import StageConfig
from student_train.loop import Parts, Phase, Take, TrainLoop
from student_train.model import S2DiT
from student_train.optim import adamw, ema_update, optimiser_step
from student_train.precision import Precision
from student_train.stage_spec import TrainingStage
from student_train.stages import STAGES as TRAINING_STAGES
from student_train.text import pad_text
from student_train.trainer import KD_STAGE, student_config_for
from teacher_jobs.analytic_corpus import class_prompts
from teacher_jobs.sampler import cache_fingerprint, record_trajectories
from teacher_jobs.teachers import build_teacher

pytestmark = pytest.mark.usefixtures("one_thread")

NAME, SECTION, ORDER = "train_toy", "train_toy", 85  # after eval_ar (80), before sample (90)
TODAY = ("corpus", "generate", "verify", "tag", "train_kd", "eval_kd", "train_ar", "eval_ar",
         "sample", "compare", "report")
STOP: dict[str, int | None] = {"at": None}  # the toy trainer "is killed" before this step


@dataclass(kw_only=True, slots=True)
class ToyConfig(StageConfig):
    """Flow matching at one noise level, from the cache's noise and x0 only."""

    TABLE: ClassVar[str] = SECTION

    sigma: float = 0.5
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
        # what sampling reads: its few-step schedule and the full grid (``full_step``)
        self.plan = {"schedule_sigmas": [1.0, config.sigma, 0.0],
                     "grid_sigmas": [1.0, 0.75, 0.5, 0.25, 0.0]}
        self.step = 0
        self.resume()

    def phases(self) -> list[Phase]:
        return [Phase("toy", self.cfg.steps, lambda: self.step, self.train_step, self.cfg.batch_size)]

    def train_step(self, take: Take) -> dict[str, Any]:
        if self.step == STOP["at"]:
            raise KeyboardInterrupt  # as a Ctrl-C between two steps
        records = take(self.cfg.batch_size)
        x0 = torch.from_numpy(np.stack([r["x0"] for r in records])).float()  # (B, C, F, H, W)
        noise = torch.from_numpy(np.stack([r["noise"] for r in records])).float()
        text, mask = pad_text(records, self.layout.max_text_len)
        s, batch = self.cfg.sigma, len(records)
        v = self.model((1 - s) * x0 + s * noise, torch.full((batch,), s), torch.zeros(batch),
                       text, mask)
        loss = torch.nn.functional.mse_loss(v, noise - x0)
        grad_norm = optimiser_step(self.opt, self.precision, loss, self.model, self.cfg.grad_clip)
        ema_update(self.ema, self.model, self.cfg.ema_decay)
        self.step += 1
        return {"loss": loss.item(), "grad_norm": grad_norm}

    def restore(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
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
                    inputs=("cache_url",), checkpoints=("toy",))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    """A small analytic-teacher cache the toy stage trains from (no Ray, no cache stages)."""
    keep = tuple(range(8))
    teacher = build_teacher("analytic", num_steps=8, latent_shape=(4, 5, 8, 8))
    prompts = class_prompts()[:8]
    records, _ = record_trajectories(teacher, prompts, [0] * len(prompts), global_seed=0,
                                     keep_steps=keep)
    fingerprint = cache_fingerprint(teacher, keep_steps=keep, global_seed=0,
                                    half_dtype="float16", negative_prompt="")
    url = str(tmp_path_factory.mktemp("toy_cache") / "cache")
    with CacheWriter(url, layout=teacher.layout(keep), fingerprint=fingerprint,
                     samples_per_shard=8) as writer:
        for record in records:
            writer.write(record)
    return url


@pytest.fixture
def toy_stage(cache):
    """The toy's one registration, removed afterwards. It trains from its own cache, not the
    run's (no cache stages: fast), so it says where its input comes from, and that the cache
    is one of its fingerprint's inputs; everything else is derived from its spec."""
    name = register_training_stage(TOY, order=ORDER, title="train the toy student",
                                   inputs=lambda ctx: {"cache_url": cache}, needs=("corpus",),
                                   extra_inputs=lambda ctx: {"cache": cache})
    yield name
    unregister_training_stage(TOY.name)
    STOP["at"] = None


RUN = f"""
[corpus]
kind = "inline"
prompts = ["a red cat", "a blue dog"]

[job]
enabled = false  # no cache stages: the toy trains from its own cache

[sample]
prompts = {json.dumps(class_prompts()[:2])}
video = false

[{SECTION}]
steps = 4
batch_size = 4
lr = 0.001
warmup_steps = 1
checkpoint_every = 2
checkpoint_every_s = 0
log_every = 1
"""


def _state(out: Path) -> dict[str, dict[str, Any]]:
    return json.loads((out / "run_state.json").read_text())["stages"]


def _s2dit(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().out


def _plan(config_path: Path, out: Path, *overrides: str) -> dict[str, tuple[str, str]]:
    steps = plan_config(load_run_config(str(config_path), overrides), out=str(out),
                        console=Console(quiet=True))
    return {s.stage: (s.action, s.why) for s in steps}


def test_the_registered_stages_run_in_todays_order_and_a_bad_registration_is_refused():
    assert tuple(STAGE_NAMES) == TODAY
    assert tuple(SECTIONS) == ("run", "corpus", "job", "verify", "tag", "train", "eval",
                               "train_ar", "sample", "compare", "report")
    early = Stage(name="early", title="reads a later stage", section="early",
                  run=lambda ctx: {}, needs=("sample",))
    with pytest.raises(ValueError, match="order 10 is 'corpus''s"):
        register_graph_stage(early, order=10)
    register_graph_stage(early, order=15)
    try:
        with pytest.raises(ValueError, match=r"'early' \(order 15\) reads \['sample'\]"):
            registered_stages()
    finally:
        unregister_graph_stage("early")
    assert tuple(STAGE_NAMES) == TODAY


def test_a_training_stage_is_derived_from_its_spec_and_registered_whole():
    by_name = {s.name: s for s in STAGES}
    kd, ar = by_name["train_kd"], by_name["train_ar"]
    assert (kd.section, kd.needs, kd.writes, kd.trains) == ("train", ("tag",), ("student",), "kd")
    # stage 2 starts from a trained student: from the training stage placed before it
    assert (ar.section, ar.needs, ar.writes, ar.trains) == ("train_ar", ("train_kd", "tag"),
                                                            ("student_ar",), "ar")
    assert by_name["sample"].uses == ("train_kd", "train_ar") and not by_name["corpus"].trains
    # a toy that starts from a student, placed after stage 2: it starts from S2DiT-AR
    chained = TrainingStage(name="chained", title="S2DiT-chained", config=ToyConfig, build=build_toy,
                            inputs=("init_url", "cache_url"), checkpoints=("chained",))
    assert register_training_stage(chained, order=ORDER) == "train_chained"
    try:
        stage = {s.name: s for s in STAGES}["train_chained"]
        assert stage.needs == ("train_ar", "tag") and stage.writes == ("student_chained",)
        assert {s.name: s for s in STAGES}["sample"].uses == ("train_kd", "train_ar", "train_chained")
        # placed before any training stage it has no student to start from: refused by name
        register_training_stage(chained, order=45, replace=True)
        with pytest.raises(ValueError, match="'chained' starts from a trained student"):
            tuple(STAGES)
    finally:
        unregister_training_stage("chained")
    # all or nothing: a spec the trainers refuse (another stage's checkpoint names) leaves no
    # graph stage behind
    thief = TrainingStage(name="thief", title="S2DiT-thief", config=ToyConfig, build=build_toy,
                          inputs=("cache_url",), checkpoints=KD_STAGE.checkpoints)
    with pytest.raises(ValueError, match="already belong to 'kd'"):
        register_training_stage(thief, order=ORDER)
    assert "thief" not in TRAINING_STAGES and tuple(STAGE_NAMES) == TODAY


def test_a_training_stage_defined_in_a_test_runs_through_s2dit_run(toy_stage, cache, tmp_path,
                                                                   capsys):
    config_path, out = tmp_path / "toy.toml", tmp_path / "run"
    config_path.write_text(RUN)
    assert tuple(STAGE_NAMES) == (*TODAY[:8], NAME, *TODAY[8:])  # at its order
    # 1. the CLI's help and --plan list it
    with pytest.raises(SystemExit):
        _s2dit(capsys, "run", "--help")
    shown = " ".join(capsys.readouterr().out.split())  # unwrapped
    assert f"[train_ar] [{SECTION}] [sample]" in shown  # the config's sections
    assert f"9. {NAME} [{SECTION}] train the toy student -> student_toy (resumable)" in shown
    assert f"after it (corpus, generate, verify, tag, train_kd, eval_kd, train_ar, eval_ar, {NAME}, " \
        "sample, compare, report)" in shown  # --from
    code, printed = _s2dit(capsys, "run", str(config_path), "--out", str(out), "--plan")
    assert code == 0 and not out.exists()
    assert any(NAME in line and "not run yet" in line for line in printed.splitlines())
    # 2. interrupted after its first checkpoint (step 2 of 4): recorded as failed
    STOP["at"] = 2
    code, _ = _s2dit(capsys, "run", str(config_path), "--out", str(out), "--no-progress")
    assert code == 130
    failed = _state(out)[NAME]
    assert failed["status"] == "failed" and failed["error"].startswith("KeyboardInterrupt")
    assert (out / "student_toy" / "checkpoints" / "step_000002").is_dir()
    plan = _plan(config_path, out)
    assert plan[NAME] == ("resume", "interrupted (failed), same inputs")
    assert plan["corpus"][0] == "up to date" and plan["train_kd"][0] == "skip"
    # 3. run again: it resumes from step 2 and finishes, its fingerprint recorded
    STOP["at"] = None
    code, _ = _s2dit(capsys, "run", str(config_path), "--out", str(out), "--no-progress")
    assert code == 0
    state = _state(out)
    done = state[NAME]
    assert done["status"] == "done" and done["resumed"] == 1
    assert done["fingerprint"] == failed["fingerprint"] == digest(done["inputs"])
    assert done["inputs"]["section"] == load_run_config(str(config_path)).section(SECTION)
    assert done["inputs"]["extra"] == {"cache": cache}
    assert done["inputs"]["upstream"]["corpus"]["fingerprint"] == state["corpus"]["fingerprint"]
    assert done["outputs"]["checkpoint"].endswith("step_000004") and done["outputs"]["step"] == 4
    assert len(done["outputs"]["tensors_sha256"]) == 64 and done["outputs"]["workers"] == 1
    assert done["outputs"]["train_seconds"] > 0  # the default results
    events = [json.loads(line) for line in (out / "student_toy" / "metrics.jsonl").open()]
    assert [e["step"] for e in events if "loss" in e] == [1, 2, 3, 4]
    assert [e["step"] for e in events if e.get("event") == "resumed"] == [2]
    assert state["train_kd"]["status"] == "skipped" and state["report"]["status"] == "done"
    # sampled: the last training stage that finished is the toy, sampled as its spec says
    sample = state["sample"]
    assert sample["status"] == "done" and sample["outputs"]["stage"] == "toy"
    assert sample["outputs"]["checkpoint"] == done["outputs"]["checkpoint"]
    assert NAME in sample["inputs"]["upstream"]
    assert np.load(out / "preview" / "preview.npy").shape[0] == 2  # its two prompts
    # reported: its stage row, and its checkpoint in report.json beside the built-in ones'
    assert f"<td>{NAME}</td>" in (out / "report.html").read_text()
    report = json.loads((out / "report.json").read_text())
    assert report["toy_checkpoint"] == done["outputs"]["checkpoint"] and report["toy_scores"] is None
    assert report["checkpoint"] is None and report["ar_checkpoint"] is None  # skipped
    # 4. up to date: left as it is; a changed key of its section reruns it; disabled: skipped
    plan = _plan(config_path, out)
    assert plan[NAME] == ("up to date", f"fingerprint {done['fingerprint'][:12]}")
    code, _ = _s2dit(capsys, "run", str(config_path), "--out", str(out), "--no-progress")
    assert code == 0 and _state(out)[NAME] == done and _state(out)["sample"] == sample
    action, why = _plan(config_path, out, f"{SECTION}.lr=0.002")[NAME]
    assert action == "run" and f"[{SECTION}] lr 0.001 -> 0.002" in why
    code, _ = _s2dit(capsys, "run", str(config_path), "--out", str(out), "--no-progress",
                     "--set", f"{SECTION}.enabled=false")
    assert code == 0
    state = _state(out)
    assert state[NAME]["reason"] == f"disabled: [{SECTION}] enabled = false"
    assert state["sample"]["status"] == "skipped"
    assert state["sample"]["reason"] == f"every training stage was skipped (train_kd, train_ar, {NAME})"


def _losses(out: Path) -> tuple[list[int], list[int]]:
    """(steps with a loss, steps of a 'resumed' event) of the toy's metrics.jsonl."""
    events = [json.loads(line) for line in (out / "student_toy" / "metrics.jsonl").open()]
    return ([e["step"] for e in events if "loss" in e],
            [e["step"] for e in events if e.get("event") == "resumed"])


def test_an_edited_run_continues_a_trained_stage_when_the_change_allows_it(toy_stage, tmp_path,
                                                                           capsys):
    """Issue 29: `s2dit run` after raising [train] steps retrained from step 0 where `s2dit
    train` on the same --out resumes. More steps (or a cadence key) now continue from the newest
    checkpoint, as the plan says; another key, or fewer steps, starts over and is named."""
    config_path, out = tmp_path / "toy.toml", tmp_path / "run"
    config_path.write_text(RUN)
    run = ["run", str(config_path), "--out", str(out), "--no-progress"]
    assert _s2dit(capsys, *run)[0] == 0
    more = f"{SECTION}.steps=6"
    continues = f"[{SECTION}] steps 4 -> 6: continues from its newest checkpoint"
    assert _plan(config_path, out, more)[NAME] == ("resume", continues)
    assert _plan(config_path, out, more)["sample"] == ("run", f"upstream {NAME} reruns")
    code, printed = _s2dit(capsys, *run, "--set", more, "--set", f"{SECTION}.log_every=2")
    assert code == 0 and f"{NAME}: [{SECTION}] log_every 1 -> 2, steps 4 -> 6: continues" in printed
    done = _state(out)[NAME]
    assert done["status"] == "done" and done["continued"].endswith("continues from its newest checkpoint")
    assert done["outputs"]["checkpoint"].endswith("step_000006") and done["outputs"]["step"] == 6
    assert _losses(out) == ([1, 2, 3, 4, 6], [4])  # steps 5-6 after resuming at 4 (log every 2)
    # another key, or fewer steps: a fresh start, the key named in the plan and by the run
    action, why = _plan(config_path, out, more, f"{SECTION}.log_every=2", f"{SECTION}.lr=0.002")[NAME]
    assert action == "run" and why == (
        f"its inputs changed since it was done: [{SECTION}] lr 0.001 -> 0.002; a fresh start: "
        f"[{SECTION}] lr 0.001 -> 0.002 changes what it trained (a trained stage continues when "
        "only steps (larger), checkpoint_every, checkpoint_every_s, log_every, loader_workers, "
        "prefetch_shards, trackers change)")
    fewer = (f"{SECTION}.steps=5", f"{SECTION}.log_every=2")
    action, why = _plan(config_path, out, *fewer)[NAME]
    assert action == "run" and why.endswith(f"a fresh start: [{SECTION}] steps 6 -> 5 changes what "
                                            "it trained (a trained stage continues when only steps "
                                            "(larger), checkpoint_every, checkpoint_every_s, "
                                            "log_every, loader_workers, prefetch_shards, trackers change)")
    code, printed = _s2dit(capsys, *run, *(a for f in fewer for a in ("--set", f)))
    assert code == 0 and "removing its old outputs student_toy" in printed
    assert f"a fresh start: [{SECTION}] steps 6 -> 5" in printed
    assert "continued" not in _state(out)[NAME] and _losses(out) == ([2, 4, 5], [])


def test_without_its_registration_its_section_is_unknown(tmp_path):
    config_path = tmp_path / "toy.toml"
    config_path.write_text(RUN)
    with pytest.raises(RunConfigError, match=rf"unknown sections \['{SECTION}'\]"):
        load_run_config(str(config_path))
