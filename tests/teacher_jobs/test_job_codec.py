"""`--codec trajectory` through the whole pipeline (issue 18): the real Ray cache job writes a
trajectory-coded Zarr cache, `verify --deep` passes it, a stage-1 run reading it trains to the
same weights as the same run on the raw-codec cache of the same job (the decoded values are
bit-identical), and `cache convert` to raw and back gives the same decoded records.

The analytic teacher (Euler) runs by default; tiny Wan with UniPC is slow-marked (its job and two
conversions take over a minute on the loaded 2-core machine)."""

from __future__ import annotations

import pytest
import torch

from cache_schema import CacheReader, load_manifest, open_store
from pipeline.cli import main as s2dit
from student_train.config import TrainConfig
from student_train.trainer import Trainer

TENSORS = ("noise", "states", "v_cond", "v_uncond", "x0", "text_emb", "neg_text_emb", "sigmas",
           "guidance", "timesteps", "expert")
STEP_FIELDS = ("states", "v_cond", "v_uncond")
# Step-field bytes, trajectory over raw (the shard index of per-step chunks included); tiny Wan
# keeps 4 of 6 UniPC steps (0, 2, 3, 4: the 4-step student's starts), so a prediction spans a gap
BOUND = {"analytic": 0.5, "wan-unipc": 0.75}
PROMPTS = ["a red square moving left", "a blue ring moving up", "a green cross moving right"]
TEACHERS = {
    "analytic": ["--teacher", "analytic", "--steps", "8", "--keep-steps", "all"],
    "wan-unipc": ["--teacher", "wan-tiny", "--solver", "unipc", "--steps", "6",
                  "--guidance", "4.0,3.0", "--height", "32", "--width", "32", "--frames", "9",
                  "--keep-steps", "0,2,3,4"],  # the 4-step student's starts
}


def _generate(corpus: str, output: str, teacher: str, codec: str) -> None:
    code = s2dit(["cache", "generate", "--prompts", corpus, "--output", output,
                  "--encoding", "zarr", "--codec", codec, "--samples-per-shard", "2",
                  "--seeds-per-prompt", "2", "--num-actors", "1", "--commit-every", "2",
                  *TEACHERS[teacher]])
    assert code == 0, f"cache generate --codec {codec} exited {code}"


def _records(url: str) -> dict[str, dict]:
    return {r["sample_id"]: r for r in CacheReader(url).iter_records(verify=True)}


def _assert_same_values(expected: dict[str, dict], got: dict[str, dict]) -> None:
    assert sorted(expected) == sorted(got)
    for sid, a in expected.items():
        b = got[sid]
        assert (a["prompt"], a["seed"]) == (b["prompt"], b["seed"])
        for name in TENSORS:
            if name in a:
                assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
                assert a[name].tobytes() == b[name].tobytes(), (sid, name)


def _step_bytes(url: str) -> int:
    """Stored bytes of the step fields (states, v_cond, v_uncond) over every shard."""
    store = open_store(url)
    return sum(size for shard in load_manifest(url).shards
               for rel, size in store.walk_files(shard.path).items()
               if rel.removeprefix(shard.path + "/").split("/")[0] in STEP_FIELDS)


def _stage1_weights(url: str, out: str) -> tuple[dict[str, torch.Tensor], int]:
    cfg = TrainConfig(steps=3, batch_size=4, warmup_steps=1, checkpoint_every=100, log_every=1,
                      model={"dim": 32, "heads": 4})
    trainer = Trainer(url, out, cfg)  # stage 1 selects its rows' steps (raw: read by range)
    assert trainer.stream.selector is not None
    trainer.run(progress=False)
    return trainer.model.state_dict(), trainer.stream.bytes_read


@pytest.mark.parametrize("teacher", [
    "analytic", pytest.param("wan-unipc", marks=pytest.mark.slow)])
def test_a_trajectory_coded_job_verifies_trains_like_raw_and_converts_both_ways(
        teacher, tmp_path, ray_runtime, one_thread, capsys):
    corpus = tmp_path / "prompts.txt"
    corpus.write_text("\n".join(PROMPTS) + "\n")
    coded, raw = str(tmp_path / "traj"), str(tmp_path / "raw")
    _generate(str(corpus), coded, teacher, "trajectory")
    _generate(str(corpus), raw, teacher, "raw")
    manifest = load_manifest(coded)
    assert manifest.layout.codec == "trajectory" and manifest.encoding == "zarr"
    assert manifest.num_samples == 2 * len(PROMPTS)
    assert load_manifest(raw).layout.codec == "raw"

    assert s2dit(["cache", "verify", "--deep", coded]) == 0
    capsys.readouterr()

    decoded = _records(coded)
    _assert_same_values(_records(raw), decoded)  # one job, two codecs: the same values
    ratio = _step_bytes(coded) / _step_bytes(raw)
    print(f"{teacher}: trajectory step fields {ratio:.3f}x raw")
    assert ratio < BOUND[teacher], f"trajectory stores {ratio:.2f}x the raw bytes of the step fields"

    traj_weights, traj_read = _stage1_weights(coded, str(tmp_path / "run-traj"))
    raw_weights, raw_read = _stage1_weights(raw, str(tmp_path / "run-raw"))
    assert traj_read > 0 and raw_read > 0
    for key, value in raw_weights.items():
        assert torch.equal(value, traj_weights[key]), key

    to_raw, back = str(tmp_path / "to-raw"), str(tmp_path / "back")
    assert s2dit(["cache", "convert", coded, "--codec", "raw", "--output", to_raw,
                  "--no-progress"]) == 0
    assert s2dit(["cache", "convert", to_raw, "--codec", "trajectory", "--output", back,
                  "--no-progress"]) == 0
    capsys.readouterr()
    assert load_manifest(to_raw).layout.codec == "raw"
    assert load_manifest(back).layout.codec == "trajectory"
    _assert_same_values(decoded, _records(to_raw))
    _assert_same_values(decoded, _records(back))
    # the coder is deterministic: the round trip stores the job's own shard bytes again
    assert sorted(s.sha256 for s in load_manifest(back).shards) == \
        sorted(s.sha256 for s in manifest.shards)
