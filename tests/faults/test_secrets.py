"""Issue 17: a planted storage secret appears nowhere: not in Ray's session directory (logs,
runtime_env records), not in the cache, not in the local folders, not in the command output."""

from __future__ import annotations

import json
import os
import tomllib
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


# -- issue 27: credentials are masked wherever a config or report is recorded ------------------
# Each test plants a secret the way a config can carry one (a URL's password, a credential key
# of a dict of options) and reads back what the writer put on disk.

PLANTED = f"planted-{uuid.uuid4().hex}"
RAY_URL = f"ray://admin:{PLANTED}@127.0.0.1:10001"


def _clean(path: Path) -> str:
    text = path.read_text()
    assert PLANTED not in text, f"{path} holds the planted secret"
    return text


def test_redact_secrets_masks_credential_keys_and_url_passwords_at_any_depth():
    from cache_schema.redact import REDACTED, redact_secrets

    value = {"s3": {"key": "AKIAEXAMPLE", "Secret": PLANTED, "token": None,
                    "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}},
             "urls": [f"s3://user:{PLANTED}@bucket/x", (f"https://:{PLANTED}@host/p",)],
             "error": f"cannot open https://bob:{PLANTED}@example.com/a: refused",
             "prompt": "a red cat", "plain": "s3://bucket/cache@3", "steps": 4, "on": True}
    out = redact_secrets(value)
    assert PLANTED not in json.dumps(out)
    assert out["s3"]["key"] == out["s3"]["Secret"] == REDACTED
    assert out["s3"]["token"] is None  # "none set" stays visible
    assert out["s3"]["client_kwargs"] == {"endpoint_url": "http://127.0.0.1:9000"}
    assert out["urls"] == ["s3://user:***@bucket/x", ("https://:***@host/p",)]
    assert out["error"] == "cannot open https://bob:***@example.com/a: refused"
    assert {k: out[k] for k in ("prompt", "plain", "steps", "on")} == {
        "prompt": "a red cat", "plain": "s3://bucket/cache@3", "steps": 4, "on": True}
    assert value["s3"]["Secret"] == PLANTED  # the caller's copy is untouched


def test_the_cache_job_records_no_secret_in_manifests_reports_or_its_status(ray_runtime, tmp_path):
    """The job config's copy in every manifest, the job report (also what the CLI prints) and
    the status file; a later commit's extra with credential keys too."""
    from cache_schema import commit_generation, load_manifest
    from teacher_jobs.config import JobConfig
    from teacher_jobs.job import run_generation

    corpus = tmp_path / "prompts.txt"
    corpus.write_text("a red square moving left\na blue ring moving right\n")
    output = tmp_path / "cache"
    config = JobConfig(teacher={"kind": "analytic", "steps": 4}, prompts=str(corpus),
                       output=str(output), samples_per_shard=1, commit_every=1,
                       ray_address=RAY_URL)  # not used: this process has a Ray runtime already
    result = run_generation(config, progress=False)
    assert result.ok and PLANTED not in json.dumps(result.report)
    assert result.report["config"]["ray_address"] == "ray://admin:***@127.0.0.1:10001"
    written = [p for p in output.rglob("*.json")]
    assert {p.parent.name for p in written} >= {"manifests", "reports"}
    assert (output / "reports" / "status.json") in written
    for path in written:
        _clean(path)
    manifest = load_manifest(str(output))
    commit_generation(str(output), shards=[], layout=manifest.layout,
                      fingerprint=manifest.fingerprint,
                      extra={"s3": {"secret": PLANTED, "region": "eu-west-1"}})
    latest = load_manifest(str(output))  # its body digest holds over the masked extra
    assert latest.generation == manifest.generation + 1
    assert latest.extra["s3"] == {"secret": "***", "region": "eu-west-1"}
    for path in output.rglob("*.json"):
        _clean(path)


def _run_context(tmp_path: Path, sections: dict):
    from rich.console import Console

    from pipeline.graph import STAGE_NAMES
    from pipeline.graph.config import RunConfig
    from pipeline.graph.stage import StageContext
    from pipeline.graph.state import RunState

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    state = RunState.load(str(run_dir), tuple(STAGE_NAMES))  # every stage pending
    return StageContext(run_dir=str(run_dir), config=RunConfig(source="run.toml", sections=sections),
                        state=state, console=Console(file=open(os.devnull, "w")))


def test_run_toml_run_state_and_report_json_record_no_secret(tmp_path):
    from pipeline.graph.runner import write_run_config
    from pipeline.graph.stages.report import run as write_reports

    sections = {"run": {"out": str(tmp_path / "run")},
                "job": {"ray_address": RAY_URL, "teacher": {"kind": "analytic"}}}
    ctx = _run_context(tmp_path, sections)
    write_run_config(ctx.run_dir, ctx.config)
    recorded = tomllib.loads(_clean(Path(ctx.path("run.toml"))))
    assert recorded["job"]["ray_address"] == "ray://admin:***@127.0.0.1:10001"
    assert ctx.config.section("job")["ray_address"] == RAY_URL  # the stages still get the value
    ctx.state.set("generate", {"status": "failed", "inputs": {"section": ctx.config.section("job")},
                               "error": f"ConnectionError: cannot reach {RAY_URL}"})
    state = json.loads(_clean(Path(ctx.state.url)))
    assert state["stages"]["generate"]["error"].endswith("ray://admin:***@127.0.0.1:10001")
    assert ctx.state.get("generate")["error"].endswith(RAY_URL)  # in memory, as it happened
    written = write_reports(ctx, ())  # report.json, and report.html showing run.toml
    report = json.loads(_clean(Path(written["report_json"])))
    assert report["config"]["job"]["ray_address"] == "ray://admin:***@127.0.0.1:10001"
    assert "ray://admin:***@127.0.0.1:10001" in _clean(Path(written["report_html"]))


def test_the_eval_stage_writes_no_secret_into_its_json(tmp_path, monkeypatch):
    """The writer under test is the stage's; the evaluation is replaced by a report naming a
    credentialed URL (as one could after a storage error)."""
    from pipeline.graph.stages import evaluate

    ctx = _run_context(tmp_path, {"eval": {"per_class": 1}})
    ctx.state.set("train_kd", {"status": "done", "outputs": {"checkpoint": ctx.path("student")}})
    report = {"checkpoint": ctx.path("student"), "step": 1, "trained_classes": 1, "per_class": 1,
              "cache": f"s3://user:{PLANTED}@bucket/cache", "s3": {"token": PLANTED}}
    monkeypatch.setattr(evaluate, "evaluate_checkpoint", lambda *a, **k: report)
    evaluate._evaluate(ctx, "train_kd", "eval_kd.json")
    written = json.loads(_clean(Path(ctx.path("eval_kd.json"))))
    assert written["cache"] == "s3://user:***@bucket/cache" and written["s3"] == {"token": "***"}


def test_a_checkpoint_state_records_no_secret(tmp_path):
    import torch

    from student_train.checkpoint import STATE, load_checkpoint, save_checkpoint

    model = torch.nn.Linear(2, 2)
    saved = save_checkpoint(str(tmp_path), 1, model=model, ema=torch.nn.Linear(2, 2),
                            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                            extra={"config": {"cache": f"s3://u:{PLANTED}@bucket/c", "lr": 0.1,
                                              "s3": {"secret": PLANTED}}})
    _clean(Path(saved) / STATE)
    state = load_checkpoint(saved)[1]  # still a valid checkpoint
    assert state["config"] == {"cache": "s3://u:***@bucket/c", "lr": 0.1,
                               "s3": {"secret": "***"}}


@pytest.mark.parametrize("how", ["file", "set"])
def test_s2dit_run_refuses_a_config_url_with_a_password_naming_the_key(how, tmp_path, capsys):
    """Before any stage runs (each records its section): as a flag's URL would be."""
    demo = Path(__file__).resolve().parents[2] / "configs" / "demo.toml"
    if how == "file":
        path = tmp_path / "run.toml"  # the demo, its includes made absolute, and the address
        text = demo.read_text().replace('include = "', f'include = "{demo.parent}/')
        path.write_text(text.replace("[job]\n", f'[job]\nray_address = "{RAY_URL}"\n', 1))
        argv = ["run", str(path), "--plan"]
    else:
        argv = ["run", str(demo), "--plan", "--set", f'job.ray_address="{RAY_URL}"']
    assert cli(argv) == 2
    out, err = capsys.readouterr()
    assert PLANTED not in out + err
    assert "[job.ray_address]" in err and "carries a password" in err
