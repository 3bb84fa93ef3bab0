"""Mixed precision in both stages: autocast runs the forward in the asked dtype with fp32
weights, fp16 loss scaling skips overflowing steps and resumes exactly, bad names are refused."""

from __future__ import annotations

import json

import pytest
import torch
from cache_factory import make_cache

from student_train.config import TrainConfig
from student_train.self_forcing import ARConfig, ARTrainer
from student_train.trainer import Trainer

pytestmark = [pytest.mark.filterwarnings("ignore:autocast to:UserWarning"),
              pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return make_cache(tmp_path_factory.mktemp("amp") / "cache", seeds=2)


def _kd(**kw) -> TrainConfig:
    return TrainConfig(**{"steps": 6, "batch_size": 8, "warmup_steps": 1, "checkpoint_every": 2,
                          "log_every": 1, "model": {"dim": 24, "heads": 2}, **kw})


def _linear_output_dtypes(model: torch.nn.Module) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen


def test_unsupported_autocast_dtype_is_refused(tmp_path):
    for cls in (TrainConfig, ARConfig):
        with pytest.raises(ValueError, match="autocast_dtype 'fp8' is not supported"):
            cls(autocast_dtype="fp8")
    path = tmp_path / "bad.toml"
    path.write_text('[train]\nautocast_dtype = "half"\n')
    with pytest.raises(ValueError, match="'half'.*bfloat16"):
        TrainConfig.load(str(path))


def test_bf16_autocast_runs_the_forward_in_bf16_with_fp32_weights(cache, tmp_path):
    runs = {}
    for name, dtype in (("fp32", None), ("bf16", "bfloat16")):
        trainer = Trainer(cache, str(tmp_path / name), _kd(steps=2, autocast_dtype=dtype))
        seen = _linear_output_dtypes(trainer.model)
        trainer.run(progress=False)
        assert seen and set(seen) == {torch.bfloat16 if dtype else torch.float32}
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
        assert all(p.dtype == torch.float32 for p in trainer.ema.parameters())
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").open()]
        assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
        runs[name] = trainer.model.state_dict()
    # the same seed and data: the two runs differ only by the precision of the forward
    diff = max((runs["fp32"][k] - runs["bf16"][k]).abs().max().item() for k in runs["fp32"])
    assert 0 < diff < 0.05


def test_fp16_loss_scaling_skips_overflowing_steps_and_resumes_exactly(cache, tmp_path):
    # a scale far too large: the first steps overflow in fp16 and are skipped, the scale halves
    cfg = _kd(steps=8, autocast_dtype="float16", loss_scale_init=2.0 ** 40)
    Trainer(cache, str(tmp_path / "a"), cfg).run(progress=False)
    Trainer(cache, str(tmp_path / "b"), cfg).run(progress=False, stop_after=5)  # "killed"
    resumed = Trainer(cache, str(tmp_path / "b"), cfg)
    assert resumed.step == 4 and resumed.precision.loss_scale < 2.0 ** 40  # scaler state restored
    resumed.run(progress=False)
    a, b = (Trainer(cache, str(tmp_path / x), cfg) for x in "ab")
    for key, value in a.model.state_dict().items():
        torch.testing.assert_close(value, b.model.state_dict()[key], rtol=1e-5, atol=1e-6)
    assert a.precision.loss_scale == b.precision.loss_scale < 2.0 ** 40
    scales = [json.loads(line)["loss_scale"] for line in (tmp_path / "a" / "metrics.jsonl").open()]
    assert scales[0] < 2.0 ** 40 and scales == sorted(scales, reverse=True)


def test_stage_two_autocast_and_its_two_scalers_resume(cache, tmp_path):
    kd = Trainer(cache, str(tmp_path / "kd"), _kd(steps=1)).run(progress=False)
    cfg = ARConfig(steps=3, batch_size=4, warmup_steps=1, checkpoint_every=1, log_every=1,
                   autocast_dtype="float16", loss_scale_init=2.0 ** 30)
    trainer = ARTrainer(kd, cache, str(tmp_path / "ar"), cfg)
    seen = _linear_output_dtypes(trainer.model)
    trainer.run(progress=False, stop_after=2)
    assert torch.float16 in seen
    resumed = ARTrainer(kd, cache, str(tmp_path / "ar"), cfg)
    assert resumed.step == 2
    assert resumed.precision.loss_scale == trainer.precision.loss_scale
    assert resumed.critic_precision.loss_scale == trainer.critic_precision.loss_scale
    resumed.run(progress=False)
    assert all(p.dtype == torch.float32 for p in resumed.model.parameters())
