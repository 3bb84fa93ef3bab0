"""README's "Reading a cache from your own code" (issue 29): its blocks, run as written on a tiny
cache tagged ``train`` in place of runs/demo/cache (the only change), so the documented API and
the stock-webdataset recipe cannot drift from the code."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from cache_factory import make_cache

from cache_schema import CacheReader
from pipeline.cli import main

README = Path(__file__).parents[2] / "README.md"
SECTION = "### Reading a cache from your own code"
DEMO_CACHE = "runs/demo/cache"


def _blocks() -> list[tuple[str, str]]:
    """(language, code) of each fenced block of the section, in order."""
    text = README.read_text()
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ")]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.DOTALL)


@pytest.fixture
def cache(tmp_path, monkeypatch, capsys) -> str:
    url = make_cache(tmp_path / "cache", seeds=1)
    assert main(["cache", "tag", url, "train"]) == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)  # shards.txt lands here
    return url


def test_the_readme_reads_a_cache_with_the_api_and_with_stock_webdataset(cache, capsys):
    blocks = _blocks()
    assert [lang for lang, _ in blocks] == ["python", "bash", "python"]
    scopes = []
    for lang, code in blocks:
        code = code.replace(DEMO_CACHE, cache)
        if lang == "bash":  # `s2dit ... > FILE`, run in process
            words = shlex.split(code.strip())
            assert words[0] == "s2dit" and words[-2] == ">"
            capsys.readouterr()  # what the blocks before printed
            assert main(words[1:-2]) == 0
            Path(words[-1]).write_text(capsys.readouterr().out)
            continue
        scope: dict = {}
        exec(compile(code, f"README.md ({SECTION})", "exec"), scope)  # noqa: S102 - our README
        scopes.append(scope)
    api, stock = scopes
    reader = CacheReader(f"{cache}@train")
    assert len(api["batch"]) == 8 and {"states", "sigmas", "x0", "text_emb"} <= set(api["batch"][0])
    assert api["resume_here"]["consumed"] == 8
    # the last sample each loop saw: the API's in manifest order, the stock reader's the same
    last = list(reader.iter_records(fields=["x0", "prompt"]))[-1]
    np.testing.assert_array_equal(api["x0"], last["x0"])
    np.testing.assert_array_equal(stock["x0"], last["x0"])
    assert stock["prompt"] == api["prompt"] == last["prompt"]
    assert stock["sample_id"] == last["sample_id"]
    assert len(stock["urls"]) == len(reader.shards)
    capsys.readouterr()
    assert main(["cache", "ls", "--shards", "--json", f"{cache}@train"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["url"] for r in rows] == stock["urls"]
    assert sum(r["samples"] for r in rows) == len(reader) and {r["encoding"] for r in rows} == {"wds"}
