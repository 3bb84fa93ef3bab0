"""A hub id that cannot be loaded (issue 29): unreachable without HF_HUB_OFFLINE, the error says
to stage the weights (`s2dit teacher stage`) or use a local folder; with HF_HUB_OFFLINE set, that
the hub cache has no copy; any other failure, to check the id. The hub library is made to fail
as it does (its own exception classes), so no test needs or uses the network."""

from __future__ import annotations

import socket

import huggingface_hub
from huggingface_hub.errors import OfflineModeIsEnabled

from pipeline.cli import main
from teacher_jobs.hub import hub_unreachable, is_hub_id

WAN = "Wan-AI/Wan2.2-T2V-A14B-Diffusers"


def _hub_fails(monkeypatch, exc: BaseException) -> None:
    def model_info(self, *args, **kwargs):
        raise exc
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)


def _generate(tmp_path, capsys) -> str:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n")
    assert main(["cache", "generate", "--teacher", f"wan:{WAN}", "--prompts", str(prompts),
                 "--output", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "cache").exists()
    return err


def test_an_unreachable_hub_says_stage_the_weights_or_use_a_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    error = ConnectionError("[Errno -2] Name or service not known")
    error.__cause__ = socket.gaierror(-2, "Name or service not known")  # no DNS, as httpx chains it
    _hub_fails(monkeypatch, error)
    err = _generate(tmp_path, capsys)
    assert "The hub cannot be reached from here" in err
    assert f"`s2dit teacher stage {WAN} --revision SHA --to URL`" in err
    assert "`staged = URL` and `revision = SHA` in [job.teacher]" in err
    assert f"`hf download {WAN} --local-dir DIR`" in err and "pass --teacher wan:DIR" in err
    assert "huggingface-cli" not in err and "HF_HUB_OFFLINE is set" not in err


def test_offline_mode_says_the_hub_cache_has_no_copy(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _hub_fails(monkeypatch, OfflineModeIsEnabled(f"Cannot reach {WAN}: offline mode is enabled"))
    err = _generate(tmp_path, capsys)
    assert f"HF_HUB_OFFLINE is set and this machine's hub cache holds no copy of {WAN}" in err
    assert "pass --teacher wan:DIR" in err and "cannot be reached" not in err


def test_another_hub_failure_is_not_called_unreachable(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    _hub_fails(monkeypatch, ValueError("404 Client Error: Repository Not Found"))
    err = _generate(tmp_path, capsys)
    assert "Repository Not Found" in err and "check the id and the revision" in err
    assert "cannot be reached" not in err


def test_what_counts_as_a_hub_id_and_as_unreachable(tmp_path):
    assert is_hub_id(WAN) and not is_hub_id("./Wan") and not is_hub_id("/models/Wan")
    (tmp_path / "owner").mkdir()
    assert not is_hub_id(str(tmp_path / "owner")) and not is_hub_id("a/b/c")
    wrapped = OSError("cannot resolve on the hub")
    wrapped.__context__ = TimeoutError("timed out")
    assert hub_unreachable(wrapped) and hub_unreachable(OfflineModeIsEnabled("offline"))
    assert not hub_unreachable(ValueError("404")) and not hub_unreachable(None)
