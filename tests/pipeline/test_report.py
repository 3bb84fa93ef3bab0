"""The run report from real run folders (RUN_LAYOUT): a partial run shows its missing stages
as pending; a tiny finished run (analytic cache, a few KD and AR steps, the oracle's scores,
the sample stage) shows every section with its numbers, videos and escaped text; one corrupt
file costs its own section only. The browser check is tests/pipeline/test_report_browser.py."""

from __future__ import annotations

import json
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cache_schema import CacheWriter, set_tag, verify_cache
from pipeline.eval import evaluate_checkpoint, save_report
from pipeline.report import write_report
from pipeline.report.page import stages_done
from pipeline.report.run_folder import STAGES
from pipeline.text_to_video import SampleConfig, generate
from student_train.config import TrainConfig
from student_train.self_forcing import ARConfig, ARTrainer
from student_train.trainer import Trainer
from teacher_jobs.analytic_corpus import split_classes
from teacher_jobs.sampler import cache_fingerprint, record_trajectories
from teacher_jobs.teachers import build_teacher

pytestmark = pytest.mark.usefixtures("one_thread")

HOSTILE = '<script>alert("x")</script> & <b>bold</b>'  # user text: must arrive as text


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class _Stage:
    """Records one stage into a run_state.json dict the way RUN_LAYOUT describes."""

    def __init__(self, state: dict, name: str):
        self.record = state["stages"].setdefault(name, {})

    def __enter__(self):
        self.t0 = time.perf_counter()
        self.record.update(status="running", started=_now())
        return self

    def __exit__(self, *exc):
        self.record.update(status="done", finished=_now(), seconds=round(time.perf_counter() - self.t0, 3))


def _write_state(run: Path, state: dict) -> None:
    (run / "run_state.json").write_text(json.dumps(state, indent=1))


def build_partial_run(run: Path, *, train_classes: int = 12, seeds: int = 2) -> tuple[Path, dict, list[str]]:
    """run.toml, prompts.txt and a verified, tagged analytic cache (8 solver steps)."""
    run.mkdir(parents=True)
    (run / "run.toml").write_text(f'# tiny test run\n[corpus]\ntrain_classes = {train_classes}\n'
                                  f'note = "{HOSTILE.replace(chr(34), chr(39))}"\n')
    state = {"run_version": 1, "stages": {s: {"status": "pending"} for s in STAGES}}
    with _Stage(state, "corpus"):
        train, _ = split_classes(train_classes=train_classes, seed=0)
        (run / "prompts.txt").write_text("".join(p + "\n" for p in train))
    with _Stage(state, "generate"):
        teacher = build_teacher("analytic", num_steps=8)
        prompts = [p for p in train for _ in range(seeds)]
        keep = tuple(range(8))
        records, _ = record_trajectories(teacher, prompts, [i % seeds for i in range(len(prompts))],
                                         global_seed=0, keep_steps=keep)
        fp = cache_fingerprint(teacher, keep_steps=keep, global_seed=0, half_dtype="float16",
                               negative_prompt="")
        with CacheWriter(str(run / "cache"), layout=teacher.layout(keep), fingerprint=fp,
                         samples_per_shard=8) as writer:
            for record in records:
                writer.write(record)
    with _Stage(state, "verify"):
        report = verify_cache(str(run / "cache"), deep=True)
        (run / "verify.json").write_text(json.dumps(report.to_json()))
    with _Stage(state, "tag"):
        set_tag(str(run / "cache"), "train", report.generation)
    _write_state(run, state)
    return run, state, train


def build_tiny_run(run: Path) -> Path:
    """The whole RUN_LAYOUT with a few optimiser steps per stage."""
    run, state, train = build_partial_run(run)
    cache = str(run / "cache@train")
    with _Stage(state, "train_kd"):
        kd = Trainer(cache, str(run / "student"), TrainConfig(
            steps=8, batch_size=8, warmup_steps=2, lr=3e-3, log_every=1, checkpoint_every=8,
            model={"dim": 24, "heads": 2})).run(progress=False)
    with _Stage(state, "eval_kd"):
        save_report(evaluate_checkpoint(kd, per_class=2), str(run / "eval_kd.json"))
    with _Stage(state, "train_ar"):
        ar = ARTrainer(kd, cache, str(run / "student_ar"), ARConfig(
            steps=2, causal_steps=2, batch_size=2, warmup_steps=1, log_every=1,
            checkpoint_every=4)).run(progress=False)
    with _Stage(state, "eval_ar"):
        save_report(evaluate_checkpoint(ar, per_class=2), str(run / "eval_ar.json"))
    with _Stage(state, "sample"):
        generate(SampleConfig(checkpoint=ar, prompts=train[:2], out=str(run / "preview" / "preview")))
    _write_state(run, state)
    return run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return build_tiny_run(tmp_path_factory.mktemp("report") / "run")


class _Page(HTMLParser):
    """The page as a browser parses it: element sources, table ids, scripts, visible text."""

    def __init__(self, text: str):
        super().__init__()
        self.images, self.sources, self.tables, self.scripts, self.text = [], [], [], 0, []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "source" or (tag == "video" and "src" in attrs):
            self.sources.append(attrs["src"])
        if tag == "table" and attrs.get("id"):
            self.tables.append(attrs["id"])
        if tag == "script":
            self.scripts += 1

    def handle_data(self, data):
        self.text.append(data)


def test_a_partial_run_shows_missing_stages_as_pending(tmp_path):
    run, state, _ = build_partial_run(tmp_path / "run", seeds=1)
    state["stages"]["train_kd"] = {"status": "failed", "error": f"killed: {HOSTILE}"}
    state["stages"]["train_ar"] = {"status": "skipped", "reason": "disabled: [train_ar] steps = 0"}
    state["stages"]["eval_ar"] = {"status": "skipped", "reason": "stage 2 is off"}
    _write_state(run, state)
    path = write_report(str(run))
    assert path == str(run / "report.html")
    text = Path(path).read_text()
    page = _Page(text)
    assert page.scripts == 0 and "<b>bold</b>" not in text  # user text escaped, never markup
    visible = " ".join(page.text)
    assert HOSTILE in visible  # ... and shown as the user wrote it
    assert "could not draw" not in visible and "Traceback" not in visible
    assert "no metrics yet" in visible and "no evaluation has run yet" in visible
    assert "the sample stage has not run yet" in visible
    assert f"failed: killed: {HOSTILE}" in visible and "skipped: disabled: [train_ar] steps = 0" in visible
    assert "eval_ar.json: skipped: stage 2 is off" in visible
    assert {"stages", "quality", "cache-summary", "cache-generations", "cache-step-stats",
            "cache-previews", "verify"} <= set(page.tables)
    # the teacher's own clips are there already, in both containers
    assert page.sources and all((run / s).stat().st_size > 0 for s in page.sources + page.images)
    assert {Path(s).suffix for s in page.sources} == {".mp4"}
    assert "4 of 4 nearest the prompt's class" in visible  # the teacher is right (the oracle says)


def test_an_empty_folder_and_a_corrupt_file_cost_only_their_sections(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    page = Path(write_report(str(empty))).read_text()
    visible = " ".join(_Page(page).text)
    assert "no run.toml yet" in visible and "no cache yet" in visible
    assert f"0 of {len(STAGES)} stages done or skipped" in page
    (empty / "cache").mkdir()  # generate has begun, nothing committed yet
    visible = " ".join(_Page(Path(write_report(str(empty))).read_text()).text)
    assert "the cache has no committed generation yet" in visible and "could not draw" not in visible
    assert visible.count("pending") >= len(STAGES)
    assert stages_done({"generate": "done"}) == "1 of 1 stage done or skipped"  # issue 29
    run, _, _ = build_partial_run(tmp_path / "run", seeds=1)
    (run / "eval_kd.json").write_text('{"held_out_seeds": ')  # a stage killed mid-write
    (run / "run_state.json").write_text("not json")
    visible = " ".join(_Page(Path(write_report(str(run))).read_text()).text)
    assert "eval_kd.json is not valid JSON" in visible and "run_state.json is not valid JSON" in visible
    assert "Cache card" in visible and "could not draw" not in visible


@pytest.mark.slow
def test_a_finished_tiny_run_shows_every_section(tiny_run):
    text = Path(write_report(str(tiny_run))).read_text()
    page = _Page(text)
    visible = " ".join(page.text)
    assert "pending (eval" not in visible and "no checkpoint yet" not in visible
    assert "could not draw" not in visible and "no metrics yet" not in visible
    eval_kd = json.loads((tiny_run / "eval_kd.json").read_text())
    eval_ar = json.loads((tiny_run / "eval_ar.json").read_text())
    # every model row of the quality table carries the oracle's numbers, held-out and unseen
    for model in ("teacher, full-step", "teacher, 4-step", "S2DiT-KD", "S2DiT-AR, streaming"):
        assert visible.count(model) >= 2, model
    assert f"{eval_ar['held_out_seeds']['student_ar_4step_streaming']['nll_per_dim']:.4g}" in visible
    assert f"{eval_kd['unseen_combinations']['student_4step']['adherence']:.4g}" in visible
    # curves of both stages, as inline SVG polylines
    assert text.count("<svg") >= 8 and "causal_loss" in visible and "critic_loss" in visible
    # the stage videos: teacher 8-step, teacher 4-step, KD, AR for 4 prompts (3 trained, 1 unseen)
    stage_videos = [s for s in page.sources if "stage" in s]
    assert len(stage_videos) == 4 * 4
    assert "S2DiT-AR, 4-step streaming" in visible and "unseen class" in visible
    assert visible.count("4 of 4 nearest the prompt's class") >= 2  # the teacher's columns
    assert len([s for s in page.sources if "sample_" in s]) == 2  # the sample stage's own MP4s
    for src in page.images + page.sources:
        assert (tiny_run / src).stat().st_size > 0, src
    stages = json.loads((tiny_run / "run_state.json").read_text())["stages"]
    assert f"{stages['train_kd']['seconds']:.4g}" in visible


def test_report_command_writes_elsewhere_with_its_own_assets(tmp_path, capsys):
    from pipeline.cli import main

    run, _, _ = build_partial_run(tmp_path / "run", seeds=1)
    out = tmp_path / "elsewhere" / "r.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    page = _Page(out.read_text())
    assert page.images and page.sources
    assert all(s.startswith("r_assets/") for s in page.images + page.sources)
    assert all((out.parent / s).stat().st_size > 0 for s in page.images + page.sources)
    assert not (run / "report.html").exists()
    assert main(["report", str(tmp_path / "no-run")]) == 2
    err = capsys.readouterr().err
    assert "no-run does not exist" in err and "s2dit run" in err


def test_a_run_folder_on_object_storage_gets_its_report_there(tmp_path, s3_bucket):
    import fsspec

    run, _, _ = build_partial_run(tmp_path / "run", seeds=1)
    fs, _ = fsspec.core.url_to_fs(s3_bucket)
    fs.put(str(run), f"{s3_bucket.removeprefix('s3://')}/run", recursive=True)
    url = f"{s3_bucket}/run"
    assert write_report(url) == f"{url}/report.html"
    with fsspec.open(f"{url}/report.html", "r") as handle:
        page = _Page(handle.read())
    visible = " ".join(page.text)
    assert "could not draw" not in visible and "Cache card" in visible
    assert page.sources and page.images
    for src in page.images + page.sources:
        assert fs.size(f"{s3_bucket.removeprefix('s3://')}/run/{src}") > 0, src


@pytest.mark.slow
def test_a_tiny_wan_run_shows_cached_samples_next_to_the_student_through_the_vae(tmp_path):
    """No oracle for Wan: the stage videos are cached samples (the teacher's x0) next to the
    student sampled from the same stored noise, all decoded by the Wan VAE."""
    import imageio.v3 as iio

    run = tmp_path / "run"
    run.mkdir()
    teacher = build_teacher("wan-tiny", num_steps=4, shift=3.0, guidance=(4.0, 3.0), height=32,
                            width=32, frames=9)
    prompts = ["a red cat running left", "blue ocean wave at night"]
    keep = tuple(range(4))
    records, _ = record_trajectories(teacher, prompts * 2, [0, 0, 1, 1], global_seed=0, keep_steps=keep)
    fp = cache_fingerprint(teacher, keep_steps=keep, global_seed=0, half_dtype="float16", negative_prompt="")
    with CacheWriter(str(run / "cache"), layout=teacher.layout(keep), fingerprint=fp, samples_per_shard=2) as writer:
        for record in records:
            writer.write(record)
    Trainer(str(run / "cache"), str(run / "student"), TrainConfig(
        steps=2, batch_size=2, warmup_steps=1, log_every=1, checkpoint_every=2,
        model={"dim": 24, "heads": 2})).run(progress=False)
    page = _Page(Path(write_report(str(run))).read_text())
    visible = " ".join(page.text)
    assert "could not draw" not in visible and "teacher, 4-step (cached)" in visible
    assert "S2DiT-KD, 4-step (step 2)" in visible and "pending: no checkpoint yet" in visible  # no AR
    clips = [s for s in page.sources if "cached" in s]
    assert len(clips) == 2 * 2  # 2 prompts x (teacher, KD)
    for src in clips:
        assert iio.imread(run / src, plugin="FFMPEG").shape == (9, 32, 32, 3)  # VAE frames
