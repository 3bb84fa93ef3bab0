"""Teacher weights staged once (issue 27): `s2dit teacher stage` copies a tiny random-weight Wan
folder to loopback S3 (or a shared folder) with a digest file; the Wan teacher loads from the
staged copy with the hub unreachable, checks the digests once per node, refuses a tampered file
by name, and never writes the HF_TOKEN of its environment anywhere."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import threading
import uuid
from pathlib import Path

import pytest

from pipeline.cli import main
from teacher_jobs import staging
from teacher_jobs.teachers.registry import make_settings
from teacher_jobs.teachers.spec import VideoSize

REV = "0123456789abcdef0123456789abcdef01234567"
VIDEO = VideoSize(height=32, width=32, frames=9)
TINY = {"kind": "wan", "dtype": "float32", "max_text_len": 16, "negative_prompt": "", "steps": 4,
        "shift": 3.0}
EXPERT = "transformer/diffusion_pytorch_model.safetensors"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    from teacher_jobs.teachers.wan import WanTeacher

    path = tmp_path_factory.mktemp("wan") / "tiny-wan22"
    WanTeacher.tiny().pipe.save_pretrained(str(path))
    return path


@pytest.fixture
def node(tmp_path, monkeypatch) -> Path:
    """A fresh node: its own node-local cache of staged copies."""
    root = tmp_path / f"node-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv(staging.CACHE_ENV, str(root))
    return root


@pytest.fixture
def no_hub(monkeypatch) -> list[str]:
    """The hub is unreachable: offline mode on, and any name but loopback fails to resolve
    (yields the names that were asked for)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    asked: list[str] = []
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in LOOPBACK:
            asked.append(name)
            raise socket.gaierror(f"test: no network to {name}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    return asked


@pytest.fixture
def verifications(monkeypatch) -> list[int]:
    """How many files each digest check covered (the driver checks only the small ones)."""
    calls: list[int] = []
    real = staging._verify_copy

    def counted(store, record, folder, files):
        calls.append(len(files))
        return real(store, record, folder, files)

    monkeypatch.setattr(staging, "_verify_copy", counted)
    return calls


def _stage(capsys, source, url, *extra) -> tuple[int, str, str]:
    code = main(["teacher", "stage", str(source), "--to", url, "--revision", REV, *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def _store(url):
    from cache_schema.store import open_store

    return open_store(url)


def test_staged_on_s3_loads_offline_with_the_same_weights_and_one_check_per_node(
        tiny_folder, s3_bucket, node, no_hub, verifications, capsys, monkeypatch):
    from safetensors.torch import load_file

    token = f"hf_{uuid.uuid4().hex}"  # a token in the environment is never written anywhere
    monkeypatch.setenv("HF_TOKEN", token)
    url = f"{s3_bucket}/weights/tiny-wan22"
    code, out, err = _stage(capsys, tiny_folder, url)
    assert code == 0, err
    store = _store(url)
    raw = store.read_bytes(staging.DIGEST_FILE)
    record = json.loads(raw)
    assert record["revision"] == REV and record["source"] == str(tiny_folder.resolve())
    assert record["files"][EXPERT]["sha256"] == hashlib.sha256((tiny_folder / EXPERT).read_bytes()).hexdigest()
    assert f'staged = "{url}"' in out and f'revision = "{REV}"' in out

    settings = make_settings({**TINY, "source": "Wan-AI/Wan2.2-T2V-A14B-Diffusers",
                              "staged": url, "revision": REV})
    plan = settings.driver_plan(VIDEO)  # configs and tokenizer only
    checkpoint = plan.fingerprint["checkpoint"]
    assert checkpoint["staged"] == hashlib.sha256(raw).hexdigest()
    assert checkpoint["revision"] == REV and checkpoint["files"][EXPERT] == record["files"][EXPERT]["sha256"]
    assert not (node / checkpoint["staged"][:32] / EXPERT).exists()  # the driver fetched no weights

    first = settings.build(VIDEO, device="cpu")
    second = settings.build(VIDEO, device="cpu")  # another actor on the same node
    full = [n for n in verifications if n == len(record["files"])]
    assert full == [len(record["files"])], verifications  # the digests were checked once
    for teacher in (first, second):
        settings.check_loaded(teacher, plan.fingerprint)  # the loaded files are the fingerprinted ones
        assert teacher.fingerprint()["checkpoint"] == checkpoint
    for part in ("transformer", "transformer_2"):  # the same weights as the folder that was staged
        saved = load_file(str(tiny_folder / part / "diffusion_pytorch_model.safetensors"))
        loaded = first.pipe.__getattribute__(part).state_dict()
        assert saved.keys() == loaded.keys()
        assert all(saved[k].equal(loaded[k]) for k in saved)
    assert no_hub == []  # nothing asked for a name beyond loopback

    written = [store.read_bytes(rel) for rel in store.walk_files("")]
    written += [p.read_bytes() for p in node.rglob("*") if p.is_file()]
    written += [out.encode(), err.encode(), json.dumps(plan.fingerprint).encode()]
    assert not [w for w in written if token.encode() in w]


def test_concurrent_actors_of_one_node_check_once(tiny_folder, s3_bucket, node, verifications, capsys):
    url = f"{s3_bucket}/weights/tiny"
    assert _stage(capsys, tiny_folder, url)[0] == 0
    folders: list[Path] = []
    threads = [threading.Thread(target=lambda: folders.append(
        staging.materialize(url, revision=REV).folder)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(folders) == 3 and len(set(folders)) == 1 and len(verifications) == 1
    assert len(list(node.glob("*.verified"))) == 1


@pytest.mark.parametrize("where", ["s3", "shared-folder"])
def test_a_tampered_staged_file_is_refused_naming_it(where, tiny_folder, s3_bucket, node, tmp_path, capsys):
    url = f"{s3_bucket}/weights/tiny" if where == "s3" else str(tmp_path / "shared" / "tiny")
    assert _stage(capsys, tiny_folder, url)[0] == 0
    store = _store(url)
    data = bytearray(store.read_bytes(EXPERT))
    data[len(data) // 2] ^= 0x01  # one flipped bit, same size
    store.put_bytes(EXPERT, bytes(data))
    settings = make_settings({**TINY, "staged": url, "revision": REV})
    with pytest.raises(staging.StagingError, match=f"does not match its digest file: {EXPERT}"):
        settings.build(VIDEO, device="cpu")
    assert not list(node.glob("*.verified"))  # a refused copy is checked again next time
    if where == "s3":  # the bad download was not kept (the good files were: a retry resumes)
        assert not list(node.rglob(EXPERT)) and list(node.rglob(EXPERT.replace("transformer", "vae")))


def test_staging_is_create_only_resumes_and_is_a_noop_when_repeated(tiny_folder, tmp_path, capsys):
    url = str(tmp_path / "staged")
    assert _stage(capsys, tiny_folder, url)[0] == 0
    digest_file = Path(url) / staging.DIGEST_FILE
    before = digest_file.read_bytes()

    code, out, _ = _stage(capsys, tiny_folder, url)  # the same content again
    assert code == 0 and out.startswith("already staged") and digest_file.read_bytes() == before

    other = tmp_path / "other"
    shutil.copytree(tiny_folder, other)
    (other / "scheduler" / "scheduler_config.json").write_text('{"shift": 5.0}')
    code, _, err = _stage(capsys, other, url)
    assert code == 2 and "already holds a different staged copy" in err
    assert "scheduler/scheduler_config.json" in err and digest_file.read_bytes() == before
    code, _, err = _stage(capsys, tiny_folder, url, "--revision", "f" * 40)  # argparse: last wins
    assert code == 2 and "revision" in err and digest_file.read_bytes() == before

    digest_file.unlink()  # an interrupted stage: files copied, no digest file yet
    code, out, _ = _stage(capsys, tiny_folder, url)
    assert code == 0 and "0 copied" in out and digest_file.read_bytes() == before


def test_staged_weights_need_a_pinned_revision_that_matches_the_copy(tiny_folder, tmp_path, node, capsys):
    url = str(tmp_path / "staged")
    assert _stage(capsys, tiny_folder, url)[0] == 0
    for revision in ("main", None, "v1.0"):
        with pytest.raises(ValueError, match="40-hex commit"):
            make_settings({**TINY, "staged": url, "revision": revision})
    placeholder = make_settings({**TINY, "staged": url, "revision": staging.PLACEHOLDER_REVISION})
    with pytest.raises(staging.StagingError, match="placeholder"):
        placeholder.driver_plan(VIDEO)
    other = make_settings({**TINY, "staged": url, "revision": "e" * 40})
    with pytest.raises(staging.StagingError, match=f"holds revision {REV}"):
        other.build(VIDEO, device="cpu")
    assert make_settings({**TINY, "staged": "", "revision": None}).staged is None  # '' unsets
    with pytest.raises(staging.StagingError, match="not a complete staged copy"):
        staging.materialize(str(tmp_path / "nothing"), revision=REV)


def test_a_hub_id_needs_a_commit_and_offline_is_one_line(tmp_path, no_hub, capsys):
    code = main(["teacher", "stage", "Wan-AI/Wan2.2-T2V-A14B-Diffusers", "--to", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert code == 2 and "40-hex commit" in err and err.count("\n") == 1
    code = main(["teacher", "stage", "Wan-AI/Wan2.2-T2V-A14B-Diffusers", "--to", str(tmp_path / "w"),
                 "--revision", REV])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cannot download Wan-AI/Wan2.2-T2V-A14B-Diffusers@")
    assert err.count("\n") == 1 and not (tmp_path / "w").exists()


def test_sampling_a_student_reads_the_text_encoder_and_vae_from_the_staged_copy(
        tiny_folder, tmp_path, node, no_hub, capsys):
    """`s2dit sample --teacher-source URL` / [sample] teacher_source for a cache of staged
    weights: the copy is materialized as the actors do, and must hold the cache's text encoder."""
    import copy

    from teacher_jobs.teachers.wan_encoders import WanEncoders

    url = str(tmp_path / "staged")
    assert _stage(capsys, tiny_folder, url)[0] == 0
    fingerprint = make_settings({**TINY, "staged": url, "revision": REV}).driver_plan(VIDEO).fingerprint
    codec = WanEncoders.for_cache(fingerprint, source=url)
    assert codec.encode_prompts(["a red cat"]).emb.shape == (1, 16, 32)
    assert list(node.glob("*.verified")) and no_hub == []
    other = copy.deepcopy(fingerprint)
    other["checkpoint"]["files"]["text_encoder/model.safetensors"] = "0" * 64
    with pytest.raises(ValueError, match="text_encoder/model.safetensors differ"):
        WanEncoders.for_cache(other, source=url)


@pytest.mark.slow  # a Ray job in its own process (its workers inherit the node's environment): ~60 s
def test_a_cache_job_loads_from_the_staged_copy_with_the_hub_unreachable(tiny_folder, s3_bucket, tmp_path, capsys):
    """`python -m teacher_jobs generate` (the RayJob entry point) with two actors on one node,
    the weights staged on loopback S3, the hub unreachable (offline mode, and an endpoint
    nothing listens on), an HF_TOKEN in the environment that no output may hold."""
    import os
    import subprocess
    import sys

    from cache_schema import load_manifest

    url = f"{s3_bucket}/weights/tiny"
    assert _stage(capsys, tiny_folder, url)[0] == 0
    digest = hashlib.sha256(_store(url).read_bytes(staging.DIGEST_FILE)).hexdigest()
    corpus = tmp_path / "prompts.txt"
    corpus.write_text("a red cat running left\nblue ocean wave at night\na green car at night\n")
    output, node = f"{s3_bucket}/cache", tmp_path / "node"
    token = f"hf_{uuid.uuid4().hex}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": token,
           "RAY_AUTH_MODE": "disabled", staging.CACHE_ENV: str(node), "OMP_NUM_THREADS": "1"}
    args = ["--teacher", "wan:Wan-AI/Wan2.2-T2V-A14B-Diffusers", "--staged", url, "--revision", REV,
            "--dtype", "float32", "--max-text-len", "16", "--steps", "2", "--shift", "3",
            "--negative-prompt", "", "--height", "32", "--width", "32", "--frames", "9",
            "--device", "cpu", "--num-actors", "2", "--samples-per-shard", "1",
            "--prompts", str(corpus), "--output", output]
    run = subprocess.run([sys.executable, "-m", "teacher_jobs", "generate", *args], env=env,
                         cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True,
                         timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    manifest = load_manifest(output)
    assert manifest.num_samples == 3
    assert manifest.fingerprint["checkpoint"]["staged"] == digest
    assert len(list(node.glob("*.verified"))) == 1  # one node, one check
    store = _store(output)
    written = [store.read_bytes(rel) for rel in store.walk_files("")]
    written += [p.read_bytes() for p in node.rglob("*") if p.is_file()]
    assert not [w for w in written + [run.stdout.encode(), run.stderr.encode()] if token.encode() in w]
