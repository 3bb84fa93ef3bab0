"""`s2dit cache report`: the cache card alone, one self-contained HTML file, from a cache the
way the job writes it (corpus loader rejections, teacher rejections, shards, the manifest's
job report); also from object storage, and refusals by name."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import fsspec
import imageio.v3 as iio
import numpy as np
import pytest

from cache_schema import CacheReader, commit_generation, write_shard
from pipeline.cli import main
from pipeline.report.cache_card import rejections, step_statistics
from teacher_jobs.analytic_corpus import class_prompts
from teacher_jobs.corpus import load_corpus
from teacher_jobs.sampler import cache_fingerprint, record_trajectories
from teacher_jobs.teachers import build_teacher

pytestmark = pytest.mark.usefixtures("one_thread")

BAD_LINE = "a red \x07ring"  # a control character: the corpus loader refuses it
TOO_LONG = "a red ring moving left " + "very " * 20  # over the 16-token limit: the teacher refuses it


def make_job_cache(url: str, tmp_path: Path) -> str:
    """A cache written as teacher_jobs.job writes one: corpus -> entries and rejections -> two
    shards of records -> a generation whose extra carries the job's report."""
    teacher = build_teacher("analytic", num_steps=8)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(p + "\n" for p in class_prompts()[:6]) + BAD_LINE + "\n"
                      + f"<i>{TOO_LONG}</i>\n")
    entries, rejected = load_corpus(str(corpus), seeds_per_prompt=2)
    keep = tuple(range(8))
    records, refused = record_trajectories(teacher, [e.prompt for e in entries], [e.seed for e in entries],
                                           global_seed=0, keep_steps=keep)
    assert refused  # the real validator refused the long prompt
    layout = teacher.layout(keep)
    shards = [write_shard(url, records[i:i + 8], layout=layout, encoding="wds", shard_name=f"u{i:04d}")
              for i in range(0, len(records), 8)]
    fp = cache_fingerprint(teacher, keep_steps=keep, global_seed=0, half_dtype="float16", negative_prompt="")
    job = {"corpus_rejections": [r.to_json() for r in rejected],
           "unit_rejections": [{"line": entries[r.index].line, "text": r.prompt, "reason": r.reason}
                               for r in refused]}
    commit_generation(url, shards=shards, layout=layout, fingerprint=fp, extra={"job": job})
    return url


def _inline_pngs(text: str) -> list[np.ndarray]:
    return [iio.imread(io.BytesIO(base64.b64decode(m)))
            for m in re.findall(r'src="data:image/png;base64,([^"]+)"', text)]


def test_cache_card_is_one_file_with_previews_statistics_and_rejections(tmp_path, capsys):
    cache = make_job_cache(str(tmp_path / "cache"), tmp_path)
    out = tmp_path / "card.html"
    assert main(["cache", "report", cache, "--out", str(out), "--prompts", "3"]) == 0
    assert str(out) in capsys.readouterr().out
    text = out.read_text()
    assert 'src="' not in text.replace('src="data:', "")  # self-contained: nothing beside it
    pictures = _inline_pngs(text)
    assert len(pictures) == 3 and all(p.shape[0] == 128 and p.shape[1] > 128 for p in pictures)
    # rejections with their reasons, escaped
    assert "<i>" not in text and "&lt;i&gt;" in text
    assert "contains control characters" in text and "exceed the text encoder&#x27;s limit of 16" in text
    reader = CacheReader(cache)
    assert {r["where"] for r in rejections(reader.manifest.extra)} == {"corpus", "teacher"}
    # the per-step table is the stored tensors' own statistics
    stats = step_statistics(reader)
    states = np.stack([r["states"] for r in reader.iter_records(fields=["states"])]).astype(np.float64)
    np.testing.assert_allclose(stats["states"]["std"], states.reshape(*states.shape[:2], -1).transpose(1, 0, 2)
                               .reshape(states.shape[1], -1).std(1), rtol=1e-6)
    assert stats["samples"] == 12 and f"{stats['v_cond']['std'][3]:.4g}" in text
    assert "2 shards" in text and text.count("<svg") == 4  # three per-step charts + the shard histogram
    for ident in ("cache-summary", "cache-generations", "cache-rejections", "cache-previews", "cache-step-stats"):
        assert f'id="{ident}"' in text


def test_cache_card_of_object_storage_and_refusals(tmp_path, s3_bucket, capsys):
    cache = make_job_cache(f"{s3_bucket}/cache", tmp_path)
    out = f"{s3_bucket}/cards/card.html"
    assert main(["cache", "report", f"{cache}@1", "--out", out, "--prompts", "0"]) == 0
    with fsspec.open(out, "r") as handle:
        text = handle.read()
    assert "cache-step-stats" in text and "cache-previews" not in text
    capsys.readouterr()
    assert main(["cache", "report", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.html")]) == 2
    assert "no cache at" in capsys.readouterr().err
    assert main(["cache", "report", cache, "--out", str(tmp_path / "x.html"), "--stats-samples", "0"]) == 2
    assert "--stats-samples" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()


@pytest.mark.slow
def test_cache_card_of_a_tiny_wan_cache_decodes_x0_through_the_vae(tmp_path, capsys):
    from cache_schema import CacheWriter

    teacher = build_teacher("wan-tiny", num_steps=4, shift=3.0, guidance=(4.0, 3.0), height=32,
                            width=32, frames=9)
    prompts = ["a red cat running left", "blue ocean wave at night"]
    keep = tuple(range(4))
    records, _ = record_trajectories(teacher, prompts, [0, 0], global_seed=0, keep_steps=keep)
    fp = cache_fingerprint(teacher, keep_steps=keep, global_seed=0, half_dtype="float16", negative_prompt="")
    cache = str(tmp_path / "cache")
    with CacheWriter(cache, layout=teacher.layout(keep), fingerprint=fp, samples_per_shard=1) as writer:
        for record in records:
            writer.write(record)
    out = tmp_path / "card.html"
    assert main(["cache", "report", cache, "--out", str(out)]) == 0
    pictures = _inline_pngs(out.read_text())
    # 9 decoded 32x32 frames per prompt (the VAE's x4 in time, x8 in space), gaps of 2 pixels
    assert [p.shape for p in pictures] == [(32, 9 * 34 - 2, 3)] * 2
