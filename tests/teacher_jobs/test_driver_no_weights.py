"""The Ray driver of a GPU job loads no model (issue 14): where CUDA is unavailable
(``CUDA_VISIBLE_DEVICES=""``) a job whose config says ``device = "cuda"`` plans the teacher from
its files, asks Ray for GPU actors and stops with "no GPU actors can be placed"; the driver
process never builds a Wan transformer, text encoder or VAE with real parameters (only the
memory plan's meta-device copies, which hold no memory)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Runs the real CLI entry point with the three model classes trapped: building one with real
# (non-meta) parameters is recorded and raises; meta-device builds are counted, which shows the
# trap is live (the memory plan builds the architectures on the meta device).
DRIVER = r'''
import json, sys
from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel
from transformers import UMT5EncoderModel

log = {"meta": [], "real": []}

def trap(cls):
    original = cls.__init__
    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if any(p.device.type != "meta" for p in self.parameters()):
            log["real"].append(cls.__name__)
            raise AssertionError(f"the driver instantiated {cls.__name__} with real weights")
        log["meta"].append(cls.__name__)
    cls.__init__ = init

for cls in (WanTransformer3DModel, UMT5EncoderModel, AutoencoderKLWan):
    trap(cls)
def no_pipeline(*args, **kwargs):
    log["real"].append("WanPipeline")
    raise AssertionError("the driver loaded a WanPipeline")
WanPipeline.from_pretrained = no_pipeline

from teacher_jobs.job import run_generation
import teacher_jobs.job as job
fingerprints = []
plan = job.cache_fingerprint
def keep(teacher_fp, **kw):
    fingerprints.append(teacher_fp)
    return plan(teacher_fp, **kw)
job.cache_fingerprint = keep

from teacher_jobs.__main__ import main
code = main(sys.argv[2:])
json.dump({"code": code, "log": log, "fingerprint": fingerprints[0] if fingerprints else None},
          open(sys.argv[1], "w"))
'''


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory) -> Path:
    from teacher_jobs.teachers.wan import WanTeacher

    path = tmp_path_factory.mktemp("wan") / "tiny-wan22"
    WanTeacher.tiny().pipe.save_pretrained(str(path))
    return path


def test_cuda_job_without_gpus_stops_at_gpu_placement_and_the_driver_builds_no_model(saved_pipeline, tmp_path):
    from teacher_jobs.staging import stage

    corpus = tmp_path / "prompts.txt"
    corpus.write_text("a red cat running left\nblue ocean wave at night\n")
    script, log = tmp_path / "driver.py", tmp_path / "log.json"
    script.write_text(DRIVER)
    revision = "ab" * 20
    staged = stage(str(saved_pipeline), str(tmp_path / "staged"), revision=revision, log=lambda _: None)
    # the shipped config's path: weights staged, the config's placeholder revision replaced
    args = ["generate", "--config", str(ROOT / "configs/wan22_a14b.toml"),
            "--staged", staged.url, "--revision", revision, "--prompts", str(corpus),
            "--output", str(tmp_path / "cache"),
            "--height", "32", "--width", "32", "--frames", "9", "--steps", "4", "--max-text-len", "16",
            "--keep-steps", "all", "--num-actors", "1"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "RAY_AUTH_MODE": "disabled",
           "S2DIT_STAGED_CACHE": str(tmp_path / "node")}
    out = subprocess.run([sys.executable, str(script), str(log), *args], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=False)
    result = json.loads(log.read_text())
    assert result["code"] == 2, out.stderr[-3000:]
    assert "no GPU actors can be placed" in out.stderr, out.stderr[-3000:]
    assert "device = 'cuda'" in out.stderr and "--device cpu" in out.stderr  # says what to do
    assert result["log"]["real"] == []
    assert "WanTransformer3DModel" in result["log"]["meta"]  # the trap saw the plan's meta builds
    # the fingerprint came from the files: sha256 of each expert's safetensors bytes
    files = result["fingerprint"]["checkpoint"]["files"]
    for rel in ("transformer/diffusion_pytorch_model.safetensors",
                "transformer_2/diffusion_pytorch_model.safetensors"):
        assert files[rel] == hashlib.sha256((saved_pipeline / rel).read_bytes()).hexdigest()
    assert result["fingerprint"]["checkpoint"]["staged"] == staged.digest
    assert result["fingerprint"]["model_dtype"] == "bfloat16"  # the A14B config's dtype
    assert not (tmp_path / "cache" / "manifests").exists()  # nothing committed
