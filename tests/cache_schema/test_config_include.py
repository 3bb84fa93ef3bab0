"""`include = "FILE"` in a config table (cache_schema.config_file.load_table), the one resolver
every command uses: the included file's table of the same name is the base, this table's keys
override it (sub-tables key by key), one level only; refusals name both files and the table."""

from __future__ import annotations

import os
from pathlib import Path

import fsspec
import pytest

from cache_schema.config_file import ConfigFileError, load_table

RECIPE = "[train]\nlr = 0.5\nsteps = 9\n[train.model]\ndim = 8\nheads = 2\n[other]\nx = 1\n"


def _write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_a_relative_include_is_beside_the_including_file_and_overridden_key_by_key(tmp_path):
    _write(tmp_path / "recipes" / "recipe.toml", RECIPE)
    top = _write(tmp_path / "recipes" / "top.toml",
                 "[train]\ninclude = 'recipe.toml'\nsteps = 3\n[train.model]\ndim = 16\n")
    assert load_table(top, "train") == {"lr": 0.5, "steps": 3, "model": {"dim": 16, "heads": 2}}
    assert load_table(top, "train_ar") is None  # no such table: the caller decides


def test_an_absolute_include_and_one_on_object_storage(tmp_path):
    recipe = _write(tmp_path / "elsewhere" / "recipe.toml", RECIPE)
    top = _write(tmp_path / "top.toml", f"[train]\ninclude = '{recipe}'\nlr = 0.1\n")
    assert load_table(top, "train") == {"lr": 0.1, "steps": 9, "model": {"dim": 8, "heads": 2}}
    fs = fsspec.filesystem("memory")
    fs.pipe("/include-test/recipe.toml", RECIPE.encode())
    fs.pipe("/include-test/top.toml", b"[train]\ninclude = 'recipe.toml'\nsteps = 4\n")
    try:  # a URL's relative include is beside it in the same store
        assert load_table("memory://include-test/top.toml", "train")["steps"] == 4
        assert load_table("memory://include-test/top.toml", "train")["lr"] == 0.5
    finally:
        fs.rm("/include-test", recursive=True)


def test_drop_removes_keys_of_the_included_base_only(tmp_path):
    _write(tmp_path / "recipe.toml", "[job]\nprompts = 'p.txt'\noutput = 'c'\nframes = 9\n")
    top = _write(tmp_path / "top.toml", "[job]\ninclude = 'recipe.toml'\nseed = 3\n")
    assert load_table(top, "job", drop=("prompts", "output")) == {"frames": 9, "seed": 3}


@pytest.mark.parametrize("recipe,top,message", [
    ("[train]\ninclude = 'third.toml'\n", "[train]\ninclude = 'recipe.toml'\n",
     r"top.toml includes .*recipe.toml, whose \[train\] includes another file: one level only"),
    ("[train_ar]\nsteps = 1\n[x]\n", "[train]\ninclude = 'recipe.toml'\n",
     r"which has no \[train\] table \(it has \['train_ar', 'x'\]\)"),
    ("train = 3\n", "[train]\ninclude = 'recipe.toml'\n", r"whose train is not a table"),
    (RECIPE, "[train]\ninclude = 3\n",
     r"\[train\] include in .*top.toml must be a file name, got 3"),
    (RECIPE, "train = 3\n", r"top.toml: \[train\] must be a table, got 3"),
])
def test_refusals_name_the_files_and_the_table(tmp_path, recipe, top, message):
    _write(tmp_path / "recipe.toml", recipe)
    _write(tmp_path / "third.toml", RECIPE)
    with pytest.raises(ConfigFileError, match=message):
        load_table(_write(tmp_path / "top.toml", top), "train")


def test_an_include_that_is_no_small_regular_file_is_refused_by_the_bounded_reader(tmp_path):
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # reading it would block forever: it is refused before it is opened
    for target, kind in ((folder, "a folder"), (fifo, "a FIFO")):
        top = _write(tmp_path / "top.toml", f"[train]\ninclude = '{target.name}'\n")
        with pytest.raises(ConfigFileError, match=rf"\[train\] of .*top.toml: include "
                                                  rf".*{target.name} is {kind}"):
            load_table(top, "train")
    top = _write(tmp_path / "top.toml", "[train]\ninclude = 'absent.toml'\n")
    with pytest.raises(FileNotFoundError, match=r"\[train\] of .*top.toml: include .*absent.toml "
                                                "does not exist"):
        load_table(top, "train")
