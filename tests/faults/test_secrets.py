"""Issue 17: a planted storage secret appears nowhere: not in Ray's session directory (logs,
runtime_env records), not in the cache, not in the local folders, not in the command output."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pipeline.cli import main as cli


def _hits(secret: bytes, root: Path) -> tuple[int, list[str]]:
    files, found = 0, []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            files += 1
            try:
                if secret in path.read_bytes():
                    found.append(str(path))
            except OSError:
                pass
    return files, found


def _profile(tmp_path: Path, endpoint: str, monkeypatch) -> list[str]:
    """A storage profile holding the endpoint, the only one that works: AWS_ENDPOINT_URL
    names a closed port, and the driver forwards it to Ray workers, so a worker that did not
    load the profile fails (whatever environment a runtime started earlier gave it)."""
    path = tmp_path / "storage.toml"
    path.write_text(f'[profiles.moto]\nclient_kwargs = {{ endpoint_url = "{endpoint}" }}\n')
    monkeypatch.setenv("S2DIT_STORAGE_PROFILES", str(path))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard: nothing listens
    return ["--storage-profile", "moto"]


@pytest.mark.slow
@pytest.mark.parametrize("via", ["env", "profile"])
def test_a_planted_secret_is_in_no_log_cache_or_output(via, s3_bucket, s3_server, tmp_path,
                                                       monkeypatch, capsys):
    """Generate (Ray actors) and verify; through a profile also train on two Ray Train
    workers: the secret reaches S3 only as a request signature."""
    import ray
    import s3fs

    secret = f"planted-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)  # moto accepts any key
    flag = _profile(tmp_path, s3_server, monkeypatch) if via == "profile" else []
    s3fs.S3FileSystem.clear_instance_cache()
    corpus = tmp_path / "prompts.txt"
    corpus.write_text("a red square moving left\na blue ring moving right\n")
    output = f"{s3_bucket}/c"
    assert cli(["cache", "generate", "--prompts", str(corpus), "--output", output,
                "--teacher", "analytic", "--steps", "4", "--samples-per-shard", "1",
                "--num-actors", "1", *flag]) == 0
    assert cli(["cache", "verify", output, "--deep", *flag]) == 0
    ray_train = Path("/tmp/ray_train")  # where Ray Train keeps its state for an S3 --out
    if via == "profile":
        config = Path(__file__).resolve().parents[2] / "configs" / "kd_demo.toml"
        assert cli(["train", "kd", "--cache", output, "--out", f"{s3_bucket}/run", "--config",
                    str(config), "--steps", "2", "--batch-size", "2", "--workers", "2",
                    *flag]) == 0
    out, err = capsys.readouterr()
    assert secret not in out + err
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    scanned, found = _hits(secret.encode(), session)
    local, found_local = _hits(secret.encode(), tmp_path)
    trained, found_train = _hits(secret.encode(), ray_train) if ray_train.exists() else (0, [])
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}, skip_instance_cache=True)
    objects = fs.find(s3_bucket.removeprefix("s3://"))
    in_cache = [o for o in objects if secret.encode() in fs.cat_file(o)]
    with capsys.disabled():
        print(f"\nsecret search ({via}): {scanned} Ray session files, {trained} Ray Train files, "
              f"{len(objects)} S3 objects, {local} local files, command output: found "
              f"{len(found) + len(found_local) + len(found_train) + len(in_cache)}")
    assert scanned > 10 and objects
    assert found == [] and found_local == [] and found_train == [] and in_cache == []
