"""`s2dit export --format pretrained` (issue 29): the trained student as config.json +
model.safetensors + sampling.json, loaded by S2DiT.from_pretrained without the training code,
samples as its checkpoint does."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from cache_factory import make_cache

from pipeline.cli import main
from student_train.config import TrainConfig
from student_train.model import S2DiT
from student_train.sampler import sample
from student_train.student import SAMPLING, StudentCheckpoint
from student_train.trainer import Trainer


def test_an_exported_folder_loads_with_from_pretrained_and_samples_like_its_checkpoint(tmp_path, capsys):
    cache = make_cache(tmp_path / "cache", seeds=1)
    cfg = TrainConfig(steps=2, batch_size=4, warmup_steps=1, checkpoint_every=2, log_every=1,
                      model={"dim": 24, "heads": 2})
    Trainer(cache, str(tmp_path / "kd"), cfg).run(progress=False)
    assert main(["export", "--model", str(tmp_path / "kd"), "--format", "pretrained",
                 "--out", str(tmp_path / "export")]) == 0
    assert "S2DiT.from_pretrained" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == \
        ["config.json", "model.safetensors", SAMPLING]

    model = S2DiT.from_pretrained(str(tmp_path / "export")).eval()
    sampling = json.loads((tmp_path / "export" / SAMPLING).read_text())
    student = StudentCheckpoint.load(str(tmp_path / "kd"))
    assert sampling["stage"] == "kd" and sampling["step"] == 2 and sampling["streams"] is False
    assert sampling["few_step_sigmas"] == student.plan["schedule_sigmas"]
    torch.manual_seed(0)
    noise, text = torch.randn(1, 4, 5, 8, 8), torch.randn(1, 5, 32)
    mask = torch.ones(1, 5, dtype=torch.bool)
    with torch.no_grad():
        ours = sample(model, noise, text, mask, sampling["few_step_sigmas"])
        theirs = student.sample(noise, text, mask, student.plan["schedule_sigmas"])
    torch.testing.assert_close(ours, theirs)
    # the README's block, as written (the folder's path replaced)
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = next(b for b in readme.split("```python\n")[1:] if "S2DiT.from_pretrained(" in b)
    scope: dict = {}
    exec(block.split("```")[0].replace('"s2dit_ar', f'"{tmp_path / "export"}'), scope)  # noqa: S102
    assert scope["sigmas"] == sampling["few_step_sigmas"]
    assert scope["model"].config.to_json() == model.config.to_json()
    # no trained student to export: one error line
    assert main(["export", "--format", "pretrained", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.startswith("error: --format pretrained exports a trained student")
