"""Text in, video out: a tiny-Wan cache -> `s2dit train kd` / `train ar` -> `s2dit sample` -> MP4s
that decode back with the right frame count and size; the cached prompt's text embedding
reproduced exactly; streaming VAE decode equal to a whole-clip decode; refusals by name."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import imageio.v3 as iio
import numpy as np
import pytest
import torch

from cache_schema import CacheReader, CacheWriter, load_manifest
from pipeline.cli import main
from pipeline.eval import load_student
from pipeline.text_to_video import student_text
from student_train.checkpoint import latest_checkpoint
from student_train.sampler import sample, sample_streaming
from student_train.text import pad_text
from teacher_jobs.analytic_corpus import class_prompts
from teacher_jobs.sampler import cache_fingerprint, record_trajectories
from teacher_jobs.teachers import build_teacher, open_sampling_side
from teacher_jobs.teachers.tiny_wan import build_tiny_pipeline
from teacher_jobs.teachers.wan_encoders import WanEncoders

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["a red cat running left", "blue ocean wave at night", "a green car moving up"]
WAN = {"num_steps": 4, "shift": 3.0, "guidance": (4.0, 3.0), "height": 32, "width": 32, "frames": 9}
KD_TOML = ("[train]\nsteps = 3\nbatch_size = 4\nwarmup_steps = 1\nlr = 0.01\ncheckpoint_every = 3\n"
           "log_every = 1\nmodel = {dim = 24, heads = 2}\n")



def _write_cache(path: Path, teacher, prompts: list[str], seeds: list[int], keep: tuple[int, ...]) -> str:
    """The records and fingerprint the Ray job writes (teacher_jobs.actors), without Ray."""
    records, rejected = record_trajectories(teacher, prompts, seeds, global_seed=0, keep_steps=keep)
    assert not rejected
    fp = cache_fingerprint(teacher, keep_steps=keep, global_seed=0, half_dtype="float16",
                           negative_prompt="")
    with CacheWriter(str(path), layout=teacher.layout(keep), fingerprint=fp, samples_per_shard=4) as writer:
        for record in records:
            writer.write(record)
    return str(path)


def _train_kd(cache: str, out: Path) -> str:
    config = out.parent / f"{out.name}.toml"
    config.write_text(KD_TOML)
    assert main(["train", "kd", "--cache", cache, "--out", str(out), "--config", str(config)]) == 0
    return str(out)


@pytest.fixture(scope="module")
def wan_cache(tmp_path_factory) -> str:
    teacher = build_teacher("wan-tiny", **WAN)
    prompts = [p for p in PROMPTS for _ in range(2)]
    return _write_cache(tmp_path_factory.mktemp("wan") / "cache", teacher, prompts,
                        [i % 2 for i in range(len(prompts))], tuple(range(4)))


@pytest.fixture(scope="module")
def wan_kd(wan_cache, tmp_path_factory) -> str:
    return _train_kd(wan_cache, tmp_path_factory.mktemp("wan-kd") / "run")


def _sample(tmp_path: Path, checkpoint: str, *extra: str, name: str = "s") -> tuple[int, str]:
    out = str(tmp_path / name)
    return main(["sample", "--checkpoint", checkpoint, "--out", out, *extra]), out


def _video(url: str) -> np.ndarray:
    with fsspec.open(url, "rb") as handle:
        return iio.imread(handle.read(), plugin="FFMPEG", extension=".mp4")


def _expected_latents(checkpoint: str, prompts: list[str], seed: int, streaming: bool, *,
                      context_sigma: float = 0.0) -> np.ndarray:
    """Recomputed from the cache's own text_emb records, not through the code under test."""
    model, state = load_student(latest_checkpoint(checkpoint))
    by_prompt = {r["prompt"]: r for r in CacheReader(state["manifest"]["cache_url"]).iter_records(
        fields=["prompt", "text_emb"])}
    text, mask = pad_text([by_prompt[p] for p in prompts], 16)  # the tiny teacher's max_text_len
    c, f, h, w = 16, 3, 4, 4  # 9 frames of 32x32 through the Wan VAE (x4 in time, x8 in space)
    noise = torch.randn((len(prompts), c, f, h, w), generator=torch.Generator().manual_seed(seed))
    sigmas = state["plan"]["schedule_sigmas"]
    if streaming:
        return sample_streaming(model, noise, text, mask, sigmas, context_sigma=context_sigma).numpy()
    return sample(model, noise, text, mask, sigmas).numpy()


def test_a_cached_prompt_gets_exactly_its_cached_text_embedding(wan_cache, tmp_path):
    manifest = load_manifest(wan_cache)
    records = list(CacheReader(wan_cache).iter_records(fields=["prompt", "text_emb"]))[::2]
    prompts = [r["prompt"] for r in records]
    want_text, want_mask = pad_text(records, manifest.layout.max_text_len)
    # the tiny builder, and a saved copy loaded without its experts (the real-weights path)
    build_tiny_pipeline().save_pretrained(str(tmp_path / "wan"))
    for source in (None, str(tmp_path / "wan")):
        codec = WanEncoders.for_cache(manifest.fingerprint, source=source)
        assert codec.pipe.transformer is None and codec.pipe.transformer_2 is None
        trimmed, text, mask = student_text(codec, prompts, manifest.layout)
        for got, record in zip(trimmed, records):
            assert got.dtype == record["text_emb"].dtype and got.shape == record["text_emb"].shape
            assert got.tobytes() == record["text_emb"].tobytes()
        assert torch.equal(text, want_text) and torch.equal(mask, want_mask)


def test_streaming_vae_decode_equals_the_whole_clip_decode(wan_cache):
    codec = WanEncoders.for_cache(load_manifest(wan_cache).fingerprint)
    latents = torch.randn(2, 16, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    whole = codec.decode(latents)
    assert whole.shape == (2, 3, 9, 32, 32)
    for split in ([1, 1, 1], [2, 1]):
        decoder = codec.stream_decoder()
        assert decoder.streams
        parts = [decoder.push(chunk) for chunk in latents.split(split, dim=2)]
        assert [p.shape[2] for p in parts] == [1 + 4 * (split[0] - 1)] + [4 * s for s in split[1:]]
        assert torch.equal(torch.cat(parts, dim=2), whole) and decoder.finish() is None


def test_kd_checkpoint_text_to_video_end_to_end(wan_kd, tmp_path, capsys):
    capsys.readouterr()
    code, out = _sample(tmp_path, wan_kd, "--prompt", PROMPTS[0], "--seed", "5")
    assert code == 0
    text = capsys.readouterr().out
    printed = json.loads(text[text.index("{\n"):])  # after the per-chunk time lines
    assert printed["videos"] == [out + ".mp4"] and printed["sidecar"] == out + ".json"
    side = json.loads(Path(out + ".json").read_text())
    frames = _video(out + ".mp4")
    assert frames.shape == ((3 - 1) * 4 + 1, 4 * 8, 4 * 8, 3) and frames.dtype == np.uint8
    assert side["video"] == {"fps": 16.0, "frames": 9, "height": 32, "width": 32,
                             "codec": "libx264", "decoded": "chunk by chunk"}
    assert side["teacher"] == "wan" and side["source"] == "tiny-random"
    assert side["prompts"] == [PROMPTS[0]] and side["seed"] == 5 and side["streaming"] is False
    assert side["stage"] == "kd" and side["step"] == 3 and side["steps"] == 4
    manifest = load_manifest(side["manifest"]["cache_url"])
    assert side["manifest"]["generation"] == manifest.generation
    assert side["manifest"]["cache_id"] == manifest.cache_id
    latents = np.load(out + ".npy")
    assert latents.shape == (1, 16, 3, 4, 4) and latents.dtype == np.float32
    np.testing.assert_array_equal(latents, _expected_latents(wan_kd, [PROMPTS[0]], 5, False))
    # same seed: same bytes; another seed or prompt: another clip; no video on request
    assert _sample(tmp_path, wan_kd, "--prompt", PROMPTS[0], "--seed", "5", "--no-video", name="again")[0] == 0
    assert np.load(tmp_path / "again.npy").tobytes() == latents.tobytes()
    assert not (tmp_path / "again.mp4").exists() and "video" not in json.loads((tmp_path / "again.json").read_text())
    for name, prompt, seed in (("other-prompt", PROMPTS[1], "5"), ("other-seed", PROMPTS[0], "6")):
        assert _sample(tmp_path, wan_kd, "--prompt", prompt, "--seed", seed, "--no-video", name=name)[0] == 0
        assert not np.array_equal(np.load(tmp_path / f"{name}.npy"), latents)
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]  # temporaries renamed away


def test_ar_checkpoint_streams_chunk_by_chunk_to_object_storage(wan_cache, wan_kd, tmp_path, s3_bucket,
                                                               capsys):
    config = tmp_path / "ar.toml"
    config.write_text("[train_ar]\nsteps = 1\nbatch_size = 2\ncritic_steps = 1\ncheckpoint_every = 1\n")
    ar = str(tmp_path / "ar")
    assert main(["train", "ar", "--init", wan_kd, "--cache", wan_cache, "--out", ar, "--config",
                 str(config), "--quiet"]) == 0
    out = f"{s3_bucket}/samples/ar"
    assert main(["sample", "--checkpoint", ar, "--prompt", PROMPTS[0], "--prompt", PROMPTS[2],
                 "--seed", "1", "--out", out]) == 0
    with fsspec.open(out + ".json") as handle:
        side = json.load(handle)
    assert side["stage"] == "ar" and side["streaming"] is True and side["chunk_frames"] == 1
    assert side["outputs"]["videos"] == [f"{out}.0.mp4", f"{out}.1.mp4"]
    for url in side["outputs"]["videos"]:
        assert _video(url).shape == (9, 32, 32, 3)
    with fsspec.open(out + ".npy") as handle:
        latents = np.load(handle)
    np.testing.assert_array_equal(latents, _expected_latents(ar, [PROMPTS[0], PROMPTS[2]], 1, True))
    # the times a viewer waits for: printed as each chunk finishes, kept in the sidecar
    printed = capsys.readouterr().out
    chunks = latents.shape[2]
    assert [f"chunk {i}: latent at" in printed for i in range(chunks)] == [True] * chunks
    assert len(side["chunk_s"]) == chunks and all(t > 0 for t in side["chunk_s"])
    first = side["first_chunk_s"]
    assert 0 < first["latent"] <= first["decoded"] <= sum(side["chunk_s"])


def test_analytic_checkpoint_keeps_scores_and_preview_and_gets_a_video(tmp_path, capsys):
    teacher = build_teacher("analytic", num_steps=8)
    prompts = class_prompts()
    cache = _write_cache(tmp_path / "cache", teacher, prompts, [0] * len(prompts), tuple(range(8)))
    kd = _train_kd(cache, tmp_path / "kd")
    capsys.readouterr()
    code, out = _sample(tmp_path, kd, "--prompt", prompts[0], "--prompt", prompts[1], "--fps", "8")
    assert code == 0
    text = capsys.readouterr().out
    printed = json.loads(text[text.index("{\n"):])  # after the per-chunk time lines
    assert printed["scores"]["samples"] == 2 and 0 <= printed["scores"]["adherence"] <= 1
    assert printed["preview"] == out + ".png" and Path(out + ".png").stat().st_size > 0
    c, f, h, w = teacher.latent_shape
    for i in range(2):
        assert _video(f"{out}.{i}.mp4").shape == (f, h * 16, w * 16, 3)  # the colour decoder's blocks
    side = json.loads(Path(out + ".json").read_text())
    assert side["teacher"] == "analytic" and side["video"]["fps"] == 8.0
    assert np.load(out + ".npy").shape == (2, c, f, h, w)
    assert _sample(tmp_path, kd, "--prompt", prompts[0], "--teacher-source", "/x", name="bad")[0] == 2
    assert "--teacher-source is for Wan caches" in capsys.readouterr().err


def test_bad_input_is_refused_by_name(wan_kd, tmp_path, capsys, monkeypatch):
    cases = [
        (["--checkpoint", str(tmp_path / "no-such-run"), "--prompt", "a cat"], "no-such-run"),
        (["--checkpoint", wan_kd, "--prompt", "a cat", "--prompt", "   "], "prompt 2 ('   ') refused: empty"),
        (["--checkpoint", wan_kd, "--prompt", "cat " * 40], "limit of 16"),
        (["--checkpoint", wan_kd, "--prompt", "a cat", "--teacher-source", str(tmp_path / "no-wan")],
         "hf download"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--checkpoint", wan_kd, "--prompt", "a cat", "--device", "cuda"],
                      "no CUDA device"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for args, message in cases:
        assert main(["sample", *args, "--out", str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err
    # weights that are not the cache's text encoder
    build_tiny_pipeline(seed=1).save_pretrained(str(tmp_path / "other-wan"))
    assert main(["sample", "--checkpoint", wan_kd, "--prompt", "a cat", "--out", str(tmp_path / "x"),
                 "--teacher-source", str(tmp_path / "other-wan")]) == 2
    assert "is not the one that made this cache" in capsys.readouterr().err
    assert not list(tmp_path.glob("x*"))  # nothing written by any refused request
    with pytest.raises(ValueError, match="teacher 'sora'"):
        open_sampling_side({"teacher": "sora"})


def test_a_longer_video_streams_past_the_trained_clip_with_bounded_memory(tmp_path, capsys):
    """--length M streams M times the trained frames (LCHA's sums windowed by default); --stream-window
    bounds SSA's cache: within the window the same latents as the unbounded stream, and the
    sidecar records both."""
    teacher = build_teacher("analytic", num_steps=8)
    prompts = class_prompts()
    cache = _write_cache(tmp_path / "cache", teacher, prompts, [0] * len(prompts), tuple(range(8)))
    kd = _train_kd(cache, tmp_path / "kd")
    c, f, h, w = teacher.latent_shape
    code, long = _sample(tmp_path, kd, "--prompt", prompts[0], "--streaming", "--length", "2", name="long")
    assert code == 0
    code, bounded = _sample(tmp_path, kd, "--prompt", prompts[0], "--streaming", "--length", "2",
                            "--stream-window", "trained", name="bounded")
    assert code == 0
    side = json.loads(Path(bounded + ".json").read_text())
    assert (side["length"], side["stream_window"], side["stream_sink"]) == (2, f - 2, "first")
    assert "length" in json.loads(Path(long + ".json").read_text())
    a, b = np.load(long + ".npy"), np.load(bounded + ".npy")
    assert a.shape == b.shape == (1, c, 2 * f, h, w) and _video(bounded + ".mp4").shape[0] == 2 * f
    np.testing.assert_allclose(a[:, :, :f], b[:, :, :f], atol=1e-5)  # the window holds the whole past
    # LCHA's sums windowed: the default past the trained length ("trained"), 'off' as trained
    assert json.loads(Path(long + ".json").read_text())["lcha_window"] == f - 2
    code, windowed = _sample(tmp_path, kd, "--prompt", prompts[0], "--streaming", "--length", "2",
                             "--lcha-window", "trained", "--no-video", name="windowed")
    assert code == 0 and json.loads(Path(windowed + ".json").read_text())["lcha_window"] == f - 2
    np.testing.assert_array_equal(np.load(windowed + ".npy"), a)
    code, unwindowed = _sample(tmp_path, kd, "--prompt", prompts[0], "--streaming", "--length", "2",
                               "--lcha-window", "off", "--no-video", name="unwindowed")
    assert code == 0 and "lcha_window" not in json.loads(Path(unwindowed + ".json").read_text())
    np.testing.assert_allclose(np.load(unwindowed + ".npy")[:, :, :f], a[:, :, :f], atol=1e-5)
    code, one = _sample(tmp_path, kd, "--prompt", prompts[0], "--streaming", "--no-video", name="one")
    assert code == 0 and "lcha_window" not in json.loads(Path(one + ".json").read_text())  # 1x: off
    capsys.readouterr()
    assert _sample(tmp_path, kd, "--prompt", prompts[0], "--length", "2", name="whole")[0] == 2  # a KD: not streamed
    assert "add --streaming" in capsys.readouterr().err
    assert _sample(tmp_path, kd, "--prompt", prompts[0], "--length", "0", name="zero")[0] == 2
    assert "length must be >= 1" in capsys.readouterr().err
