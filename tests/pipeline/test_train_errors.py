"""A Ray Train failure at the CLI (issue 29): one `error:` line with the failing rank, the
worker's exception type and message and what to do, exit 2, no Ray traceback; S2DIT_DEBUG=1
keeps the whole trace, the workers' included. Ray's own exception classes, raised where
`s2dit train` calls Ray Train (student_train.launch.launch)."""

from __future__ import annotations

import pytest
import ray.exceptions
import ray.train

import student_train.launch
from cache_schema import FingerprintMismatch
from pipeline.cli import main
from pipeline.commands.errors import describe, is_training_failure

TRAIN_KD = ["train", "kd", "--cache", "c", "--out", "o", "--workers", "2"]


def _failing(exc: BaseException):
    def launch(*args, **kwargs):
        raise exc
    return launch


def _group(failures: dict[int, BaseException]) -> ray.train.WorkerGroupError:
    snippet = "Traceback (most recent call last):\n  File \"worker.py\", line 1\nboom"
    return ray.train.WorkerGroupError(f"[Rank 0 Error Snippet]:\n{snippet}", failures)


def test_a_worker_error_is_one_line_naming_rank_type_message_and_what_to_do(monkeypatch, capsys):
    mismatch = FingerprintMismatch("cache /c was made by another teacher (digest abc)")
    monkeypatch.setattr(student_train.launch, "launch", _failing(_group({1: mismatch, 0: mismatch})))
    monkeypatch.delenv("S2DIT_DEBUG", raising=False)
    assert main(TRAIN_KD) == 2
    err = capsys.readouterr().err
    assert err == ("error: Ray Train worker ranks 0, 1 failed: FingerprintMismatch: cache /c was "
                   "made by another teacher (digest abc); fix that and rerun the same command: "
                   "training resumes from the newest checkpoint\n")


def test_ranks_failing_differently_and_a_dead_worker(monkeypatch, capsys):
    died = ray.exceptions.ActorDiedError()
    monkeypatch.setattr(student_train.launch, "launch",
                        _failing(_group({2: died, 3: RuntimeError("nan loss")})))
    assert main(TRAIN_KD) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: Ray Train worker rank 2 (and 1 other rank with other errors) "
                          "failed: ActorDiedError: ")
    assert "died (out of memory?)" in err and "--max-failures N" in err


def test_a_controller_error_and_an_unknown_bug_say_how_to_see_more():
    controller = ray.train.ControllerError(RuntimeError("placement group timed out"))
    assert is_training_failure(controller)
    text = describe(controller)
    assert text.startswith("the Ray Train controller failed: RuntimeError: placement group timed out")
    assert "S2DIT_DEBUG=1" in text
    assert not is_training_failure(RuntimeError("not Ray's"))


def test_s2dit_debug_shows_the_workers_traceback(monkeypatch, capsys):
    monkeypatch.setattr(student_train.launch, "launch",
                        _failing(_group({0: ValueError("bad shard")})))
    monkeypatch.setenv("S2DIT_DEBUG", "1")
    assert main(TRAIN_KD) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "[Rank 0 Error Snippet]" in err
    assert err.rstrip().splitlines()[-1].startswith("error: Ray Train worker rank 0 failed: "
                                                    "ValueError: bad shard")


@pytest.mark.slow
def test_a_real_worker_failure_is_one_line(tmp_path, capsys):
    """Two real Ray Train workers refusing the cache (a fingerprint digest it does not have)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "errors_cache_factory", Path(__file__).parents[1] / "student_train" / "cache_factory.py")
    factory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(factory)
    cache = factory.make_cache(tmp_path / "cache", seeds=1)
    assert main(["train", "kd", "--cache", cache, "--out", str(tmp_path / "kd"), "--workers", "2",
                 "--steps", "2", "--batch-size", "2", "--set", "expect_fingerprint_digest='abc'",
                 "--set", "model.dim=16", "--set", "model.heads=2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error: Ray Train worker ranks 0, 1 failed: FingerprintMismatch" in err
    assert "Traceback" not in err
