"""profile -> search -> train: a training config names the search's layout file and the run
builds exactly that student; a layout searched for other shapes is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cache_factory import make_cache

from pipeline.cli import main
from student_train.config import TrainConfig
from student_train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return make_cache(tmp_path_factory.mktemp("layout") / "cache", seeds=1)


def _search(tmp_path, latent_shape: str) -> str:
    lut, layout = tmp_path / f"lut{latent_shape}.json", tmp_path / f"layout{latent_shape}.json"
    assert main(["profile", "--out", str(lut), "--latent-shape", latent_shape, "--text-dim", "32",
                 "--dim", "24", "--heads", "2", "--repeats", "2", "--warmup", "1",
                 "--strides", "1,2"]) == 0
    table = json.loads(lut.read_text())
    budget = table["fixed"]["latency_ms"] + 5 * max(o["latency_ms"] for o in table["options"])
    assert main(["search", "--lut", str(lut), "--latency-budget", f"{budget:.4f}",
                 "--max-blocks", "5", "--out", str(layout), "--scores", '{"ssa:1": 3.0}']) == 0
    return str(layout)


def test_training_builds_the_searched_layout(cache, tmp_path):
    layout_file = _search(tmp_path, "4,5,8,8")
    searched = json.loads(Path(layout_file).read_text())
    config = TrainConfig(steps=1, batch_size=4, layout_file=layout_file, model={"dim": 24})
    trainer = Trainer(cache, str(tmp_path / "run"), config)
    assert [b.spec for b in trainer.model.blocks] == searched["layout"]
    assert trainer.model_config.dim == 24 and trainer.model_config.heads == 2  # from the file
    trainer.run(progress=False)
    state = json.loads((tmp_path / "run" / "checkpoints" / "step_000001" / "state.json").read_text())
    assert state["model_config"]["layout"] == searched["layout"]
    assert state["config"]["layout_file"] == layout_file  # the resolved config names its source
    # the same through the command line
    assert main(["train", "kd", "--cache", cache, "--out", str(tmp_path / "cli"), "--steps", "1",
                 "--batch-size", "4", "--layout-file", layout_file]) == 0
    state = json.loads((tmp_path / "cli" / "checkpoints" / "step_000001" / "state.json").read_text())
    assert state["model_config"]["layout"] == searched["layout"]


def test_a_layout_searched_for_other_shapes_or_a_bad_file_is_refused(cache, tmp_path):
    layout_file = _search(tmp_path, "4,5,8,8")
    contradicting = TrainConfig(steps=1, layout_file=layout_file, model={"dim": 32, "heads": 2})
    with pytest.raises(ValueError, match=r"disagree on \{'dim': \(24, 32\)\}"):
        Trainer(cache, str(tmp_path / "d"), contradicting)
    other = _search(tmp_path, "4,5,16,16")
    with pytest.raises(ValueError, match=r"searched for .*latent_height.*profile and search at the cache"):
        Trainer(cache, str(tmp_path / "a"), TrainConfig(steps=1, layout_file=other))
    with pytest.raises(FileNotFoundError, match="s2dit search"):
        Trainer(cache, str(tmp_path / "b"), TrainConfig(steps=1, layout_file=str(tmp_path / "no.json")))
    (tmp_path / "lut.json").write_text('{"options": []}')
    with pytest.raises(ValueError, match="has no 'model' with a 'layout'"):
        Trainer(cache, str(tmp_path / "c"), TrainConfig(steps=1, layout_file=str(tmp_path / "lut.json")))
