"""Issue 17: a planted storage secret appears nowhere: not in Ray's session directory (logs,
runtime_env records), not in the cache, not in the local folders, not in the command output."""

from __future__ import annotations

import os
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


@pytest.mark.slow
@pytest.mark.xfail(reason="open (issue 17): the job passes AWS_* through Ray runtime_env "
                          "env_vars, which Ray writes to logs/runtime_env_agent.log", strict=False)
def test_a_planted_secret_is_in_no_log_cache_or_output(s3_bucket, tmp_path, monkeypatch, capsys):
    import ray
    import s3fs

    secret = f"planted-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)  # moto accepts any key
    s3fs.S3FileSystem.clear_instance_cache()
    corpus = tmp_path / "prompts.txt"
    corpus.write_text("a red square moving left\na blue ring moving right\n")
    output = f"{s3_bucket}/c"
    assert cli(["cache", "generate", "--prompts", str(corpus), "--output", output,
                "--teacher", "analytic", "--steps", "4", "--samples-per-shard", "1",
                "--num-actors", "1"]) == 0
    out, err = capsys.readouterr()
    assert secret not in out + err
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    scanned, found = _hits(secret.encode(), session)
    local, found_local = _hits(secret.encode(), tmp_path)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": os.environ["AWS_ENDPOINT_URL"]})
    objects = fs.find(output.removeprefix("s3://"))
    in_cache = [o for o in objects if secret.encode() in fs.cat_file(o)]
    with capsys.disabled():
        print(f"\nsecret search: {scanned} Ray session files, {len(objects)} cache objects, "
              f"{local} local files, command output: found {len(found) + len(found_local) + len(in_cache)}")
    assert scanned > 10 and objects
    assert found == [] and found_local == [] and in_cache == []
