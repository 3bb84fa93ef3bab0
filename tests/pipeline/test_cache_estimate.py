"""`s2dit cache estimate` sizes what the job will write: with ``causal_chunk_frames`` set, the
causal ODE pairs (a second trajectory and end state, stored like ``states`` and ``x0``) too. For
people it prints tables (issue 29): a total for a local corpus, why there is none for a remote or
missing one, and that raw bytes bound the other codecs."""

from __future__ import annotations

import json
import math

from pipeline.cli import main


def _estimate(capsys, *sets: str) -> dict:
    flags = [f for s in sets for f in ("--set", s)]
    assert main(["cache", "estimate", "--json", "--set", "teacher.steps=12", *flags]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_estimate_counts_causal_pairs_only_when_the_job_writes_them(capsys):
    plain = _estimate(capsys)
    paired = _estimate(capsys, "teacher.causal_chunk_frames=1")
    assert not plain["causal_pairs"] and paired["causal_pairs"]
    latent = math.prod(plain["latent_shape"])
    fp16 = 2  # the default half_dtype
    pairs = (plain["kept_steps"] * latent + latent) * fp16  # causal_states (S, C, F, H, W) + causal_x0
    assert pairs > 0 and paired["bytes_per_sample"] - plain["bytes_per_sample"] == pairs


def _human(capsys, monkeypatch, *flags: str) -> str:
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["cache", "estimate", *flags]) == 0
    return capsys.readouterr().out


def test_the_estimate_is_a_table_with_the_corpus_total_and_the_codec_note(tmp_path, capsys,
                                                                         monkeypatch):
    corpus = tmp_path / "prompts.txt"
    corpus.write_text("a cat\na dog\na bird\n")
    flags = ["--prompts", str(corpus), "--set", "seeds_per_prompt=2"]
    text = _human(capsys, monkeypatch, *flags, "--encoding", "zarr", "--codec", "zstd")
    lines = text.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    assert "{" not in text and "[" not in text.replace("[job]", "")  # no Python reprs
    plan = _estimate(capsys, "seeds_per_prompt=2", f"prompts='{corpus}'")
    assert plan["samples"] == 6 and plan["total_bytes"] == 6 * plan["bytes_per_sample"]
    row = next(line for line in lines if line.startswith("samples")).split()
    assert row[1] == "6" and any(line.startswith("total ") and "MB" in line for line in lines)
    assert "(raw; zstd stores less)" in text and "upper bound" in " ".join(text.split())


def test_a_remote_or_missing_corpus_says_why_there_is_no_total(capsys, monkeypatch):
    text = " ".join(_human(capsys, monkeypatch).split())
    assert "samples no corpus given (--prompts or [job] prompts): no total" in text
    text = " ".join(_human(capsys, monkeypatch, "--prompts", "memory://estimate/p.txt").split())
    assert "not counted: the corpus memory://estimate/p.txt is remote" in text
    assert _estimate(capsys, "prompts='memory://estimate/p.txt'")["total_bytes"] is None
