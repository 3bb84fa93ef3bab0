"""Storage profiles end to end (issue 13): ``--storage-profile NAME`` on every command, one
process-wide selection that Ray actors and train workers receive by name, never recorded."""

from __future__ import annotations

import argparse
import os
import uuid
from pathlib import Path

import fsspec.config
import pytest

from cache_schema import StoreError
from cache_schema.store import (
    PROFILE_ENV,
    PROFILES_ENV,
    apply_storage_env,
    open_store,
    read_profile,
    storage_env,
    use_profile,
)
from pipeline.cli import build_parser
from pipeline.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]


def _profiles(tmp_path: Path, body: str, monkeypatch) -> Path:
    path = tmp_path / "storage.toml"
    path.write_text(body)
    monkeypatch.setenv(PROFILES_ENV, str(path))
    return path


def _leaves(parser: argparse.ArgumentParser, name: str = "s2dit"):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield name, parser
        return
    for child_name, child in subs[0].choices.items():
        yield from _leaves(child, f"{name} {child_name}")


def test_every_command_takes_a_storage_profile():
    leaves = dict(_leaves(build_parser()))
    assert {"s2dit cache generate", "s2dit cache verify", "s2dit cache merge", "s2dit train kd",
            "s2dit train ar", "s2dit run", "s2dit demo", "s2dit sample"} <= set(leaves)
    missing = [n for n, p in leaves.items() if "--storage-profile" not in p._option_string_actions]
    assert missing == []
    # one flag: teacher_jobs.cli_args (for `python -m teacher_jobs`) and pipeline.cli agree
    helps = {p._option_string_actions["--storage-profile"].help for p in leaves.values()}
    assert len(helps) == 1


def test_an_unknown_profile_or_a_missing_file_is_one_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(PROFILES_ENV, str(tmp_path / "absent.toml"))
    assert cli(["cache", "ls", str(tmp_path), "--storage-profile", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert "'nope'" in err[0] and "absent.toml" in err[0] and PROFILES_ENV in err[0]
    path = _profiles(tmp_path, "[profiles.other]\ndefault_block_size = 1024\n", monkeypatch)
    assert cli(["cache", "verify", str(tmp_path), "--storage-profile", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'nope'" in err[0] and str(path) in err[0] and "other" in err[0]
    assert PROFILE_ENV not in os.environ and "s3" not in fsspec.config.conf


def test_a_profile_carrying_a_credential_is_refused_without_echoing_it(tmp_path, monkeypatch,
                                                                        capsys):
    _profiles(tmp_path, '[profiles.leaky]\nsecret = "hunter2-value"\n'
                        '[profiles.nested]\nclient_kwargs = { aws_secret_access_key = "v2" }\n',
              monkeypatch)
    for name, key in (("leaky", "secret"), ("nested", "client_kwargs.aws_secret_access_key")):
        assert cli(["cache", "ls", str(tmp_path), "--storage-profile", name]) == 2
        err = capsys.readouterr().err
        assert key in err and "hunter2" not in err and "v2" not in err.replace(key, "")


def test_use_profile_is_process_wide_and_restored(tmp_path, monkeypatch):
    _profiles(tmp_path, '[profiles.p]\nclient_kwargs = { endpoint_url = "http://127.0.0.1:1" }\n'
                        '[profiles.g]\nprotocol = "memory"\nskip_instance_cache = true\n',
              monkeypatch)
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    assert read_profile("g") == ("memory", {"skip_instance_cache": True})
    before = {k: dict(v) for k, v in fsspec.config.conf.items()}
    with use_profile("p") as name:
        assert name == "p" and os.environ[PROFILE_ENV] == "p"
        assert fsspec.config.conf["s3"]["client_kwargs"] == {"endpoint_url": "http://127.0.0.1:1"}
        import s3fs

        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        assert isinstance(fs, s3fs.S3FileSystem)
        assert fs.client_kwargs == {"endpoint_url": "http://127.0.0.1:1"}  # without being passed
    assert fsspec.config.conf == before and PROFILE_ENV not in os.environ
    monkeypatch.setenv(PROFILE_ENV, "p")  # the environment selects it when no flag does
    with use_profile() as name:
        assert name == "p" and "s3" in fsspec.config.conf
    assert fsspec.config.conf == before


def test_workers_get_names_and_paths_never_secrets(tmp_path, monkeypatch):
    path = _profiles(tmp_path, "[profiles.p]\ndefault_block_size = 1024\n", monkeypatch)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-forward")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "do-not-forward")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "do-not-forward")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    with use_profile("p"):
        env = storage_env()
    assert "do-not-forward" not in str(env)
    assert env[PROFILE_ENV] == "p" and env[PROFILES_ENV] == str(path)
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1"
    with pytest.raises(StoreError, match="AWS_SECRET_ACCESS_KEY"):
        apply_storage_env({"AWS_SECRET_ACCESS_KEY": "x"})


def test_the_shipped_profiles_file_loads(monkeypatch):
    monkeypatch.setenv(PROFILES_ENV, str(ROOT / "infra" / "storage" / "profiles.toml"))
    for name in ("minio-local", "aws"):
        protocol, options = read_profile(name)
        assert protocol == "s3" and options


def test_generate_verify_train_through_a_profile_on_s3(ray_runtime, s3_bucket, s3_server,
                                                       tmp_path, monkeypatch, capsys):
    """The endpoint comes from the profile alone: the driver, the Ray teacher actors and the
    trainer's checkpoints all reach moto through it (AWS_ENDPOINT_URL points at a closed port,
    and the driver forwards it to the actors: only the profile's endpoint works); the
    profile's name and file appear nowhere in the cache or the run."""
    import s3fs

    name = f"moto-{uuid.uuid4().hex[:8]}"
    profiles = _profiles(tmp_path, f'[profiles.{name}]\n'
                                   f'client_kwargs = {{ endpoint_url = "{s3_server}" }}\n',
                         monkeypatch)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard: nothing listens
    s3fs.S3FileSystem.clear_instance_cache()
    corpus = tmp_path / "prompts.txt"
    corpus.write_text("a red square moving left\na blue ring moving right\n"
                      "a green cross moving left\n")
    cache, run = f"{s3_bucket}/cache", f"{s3_bucket}/run"
    flag = ["--storage-profile", name]
    assert cli(["cache", "generate", "--prompts", str(corpus), "--output", cache, "--teacher",
                "analytic", "--steps", "4", "--samples-per-shard", "2", "--num-actors", "2",
                "--seeds-per-prompt", "2", *flag]) == 0
    assert cli(["cache", "verify", cache, "--deep", *flag]) == 0
    assert cli(["train", "kd", "--cache", cache, "--out", run, "--config",
                str(ROOT / "configs" / "kd_demo.toml"), "--steps", "2", "--batch-size", "2",
                "--json", *flag]) == 0
    out = capsys.readouterr().out
    assert '"checkpoint": "s3://' in out
    from cache_schema import CacheReader

    with use_profile(name):
        prompts = sorted(r["prompt"] for r in CacheReader(cache).iter_records(fields=["prompt"]))
    assert len(prompts) == 6
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}, skip_instance_cache=True)
    objects = fs.find(s3_bucket.removeprefix("s3://"))
    assert any("/run/" in o for o in objects) and any("/cache/" in o for o in objects)
    recorded = [o for o in objects
                if name.encode() in (data := fs.cat_file(o)) or str(profiles).encode() in data]
    assert recorded == []
    assert PROFILE_ENV not in os.environ and "s3" not in fsspec.config.conf


def test_a_url_carrying_a_password_is_refused_and_never_echoed(tmp_path, capsys):
    url = "https://reader:pw-9f3e1@example.invalid/prompts.txt"
    assert cli(["cache", "generate", "--prompts", url, "--output", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--prompts" in err[0] and "reader:***@example.invalid" in err[0]
    assert "pw-9f3e1" not in err[0]
    with pytest.raises(StoreError, match="carries a password") as raised:
        open_store("s3://AKIAX:sk-4411@bucket/cache")
    assert "sk-4411" not in str(raised.value)
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_a_store_takes_its_options_from_the_profile_and_does_not_print_them(tmp_path, monkeypatch):
    """The profile is the one channel for storage options (open_store takes none): a store
    opened while it is selected has them, and its repr shows none of them."""
    _profiles(tmp_path, '[profiles.local]\nprotocol = "file"\nauto_mkdir = true\n', monkeypatch)
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    with use_profile("local"):
        store = open_store(str(tmp_path))
    assert store.fs.auto_mkdir is True and "auto_mkdir" not in repr(store)
    assert open_store(str(tmp_path)).fs.auto_mkdir is False  # the selection ended with the block


# -- the CLI imports only the command it runs (pipeline/cli.py; here as this helper's test file)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a.help for a in sub._choices_actions}


def test_the_lazy_command_table_matches_what_the_modules_register():
    from pipeline.cli import COMMANDS, GROUP_HELP

    full = build_parser()
    registered = [(None, name, text) for name, text in _subcommands(full).items()
                  if name not in GROUP_HELP]
    for group in GROUP_HELP:
        group_parser = next(a for a in full._actions
                            if isinstance(a, argparse._SubParsersAction)).choices[group]
        registered += [(group, name, text) for name, text in _subcommands(group_parser).items()]
    assert sorted(registered, key=str) == sorted(((g, c, t) for g, c, _, t in COMMANDS), key=str)
    lazy = build_parser(["--help"])
    assert lazy.format_help() == full.format_help()
    for argv in (["cache", "ls", "x"], ["train", "kd", "--cache", "c", "--out", "o"],
                 ["cache", "generate"], ["report", "run"], ["cache", "report", "c", "--out", "o"]):
        args = build_parser(argv).parse_args(argv)  # the real command, not a placeholder
        assert args.func.__name__ != "_placeholder" and hasattr(args, "storage_profile")


def test_help_imports_no_command_module_and_a_command_only_its_own():
    import subprocess
    import sys

    probe = ("import sys\nfrom pipeline.cli import main\n"
             "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print(' '.join(sorted(sys.modules)))")

    def loaded(*argv: str) -> set[str]:
        done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True,
                              text=True, check=False, cwd=ROOT)
        return set(done.stdout.strip().splitlines()[-1].split())

    heavy = {"torch", "ray", "cache_schema", "teacher_jobs", "student_train"}
    for argv in (["--help"], ["cache", "--help"]):
        modules = loaded(*argv)
        assert not modules & heavy and not any(m.startswith("pipeline.commands") for m in modules)
    modules = loaded("cache", "ls", "--help")
    assert "pipeline.commands.cache_inspect" in modules and "cache_schema" in modules
    assert not modules & {"torch", "ray", "pipeline.commands.cache_versioning",
                          "pipeline.commands.model"}
