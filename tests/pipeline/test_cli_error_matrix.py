"""Every leaf command of `s2dit` (walked from the parser, so a new command joins by itself) meets
bad input of five kinds: a mistyped flag, an unknown flag, a missing local path, a URL of an
unsupported scheme and an S3 endpoint nobody listens on. Each is one `error:` line on stderr,
no traceback, exit code 2, before any Ray runtime or training starts (all run in process).

Also: a missing bucket, an unreachable endpoint and a missing cache told apart (moto's S3
server on loopback), and --device cuda on a machine without CUDA."""

from __future__ import annotations

import argparse
import socket
import time

import pytest

from pipeline.cli import NOT_STORAGE, build_parser, main


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, child in subs[0].choices.items():
        yield from _leaves(child, (*path, name))


LEAVES = dict(_leaves(build_parser()))
OUTPUTS = {"out", "output"}  # what a command writes: the matrix never lets it be the bad value
WORDS = {"name", *NOT_STORAGE}  # text that names no file (cache tag NAME, --prompt)
# Leaves whose input is an option rather than a required argument: the option given the bad
# value (with the other options it needs). None: the leaf reads no input path.
OPTIONAL_INPUT: dict[tuple[str, ...], list[str] | None] = {
    ("cache", "generate"): ["--prompts"], ("cache", "estimate"): ["--prompts"],
    ("profile",): ["--config"], ("export",): ["--model"], ("demo",): None,
}
# A leaf with no input path still takes URLs: the one its URL cases use.
URL_OPTION = {("demo",): "--out"}


def _required(leaf: argparse.ArgumentParser) -> list[argparse.Action]:
    actions = [a for a in leaf._actions if (not a.option_strings or a.required) and a.dest != "help"]
    return actions + [g._group_actions[0] for g in leaf._mutually_exclusive_groups if g.required]


def _argv(path: tuple[str, ...], value: str, out: str, *, url_case: bool = False) -> list[str]:
    """``path`` with its required arguments: ``value`` for each that reads a file or URL, ``out``
    for what it writes, something valid for the rest; plus its optional input when it has no
    required one."""
    argv = list(path)
    for action in _required(LEAVES[path]):
        if action.dest in OUTPUTS:
            given = [out]
        elif action.dest in WORDS:
            given = ["word"]
        elif action.type in (int, float):
            given = ["1"]
        elif action.choices:
            given = [str(next(iter(action.choices)))]
        else:
            given = [value, value] if action.nargs == "+" else [value]
        argv += [*action.option_strings[:1], *given]
    extra = OPTIONAL_INPUT.get(path, [])
    if extra is None and url_case:
        extra = [URL_OPTION[path]]
    for option in extra or []:
        argv += [option, value]
    if path == ("cache", "generate"):
        argv += ["--output", out]
    return argv


def _one_error_line(err: str, prefix: str = "error: ") -> str:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(prefix), err
    return lines[0]


def _near_miss(leaf: argparse.ArgumentParser) -> tuple[str, str]:
    """(a mistyped flag, the flag meant): the leaf's first own long option (else the one every
    leaf has) with its last letter doubled."""
    options = [o for a in leaf._actions for o in a.option_strings
               if o.startswith("--") and o not in ("--help", "--storage-profile")]
    meant = [*options, "--storage-profile"][0]
    return meant + meant[-1], meant


@pytest.mark.parametrize("path", list(LEAVES), ids=" ".join)
def test_an_unknown_or_mistyped_flag_shows_the_commands_own_usage(path, tmp_path, capsys):
    typo, meant = _near_miss(LEAVES[path])
    for flag, hint in (("--no-such-flag", None), (typo, f"(did you mean {meant}?)")):
        with pytest.raises(SystemExit) as exited:
            main([*_argv(path, str(tmp_path / "x"), str(tmp_path / "out")), flag])
        err = capsys.readouterr().err
        line = _one_error_line(err, prefix=f"s2dit {' '.join(path)}: error: ")
        assert exited.value.code == 2 and f"unrecognized arguments: {flag}" in line
        assert err.startswith(f"usage: s2dit {' '.join(path)} ")
        assert hint is None or line.endswith(hint), line
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("path", list(LEAVES), ids=" ".join)
def test_a_missing_input_path_is_one_error_line_naming_it(path, tmp_path, capsys):
    if OPTIONAL_INPUT.get(path, []) is None:
        pytest.skip(f"{' '.join(path)} reads no input path (its URL cases are below)")
    missing = tmp_path / "missing"
    assert main(_argv(path, str(missing), str(tmp_path / "out"))) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(missing) in line, line
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.parametrize("scheme", ["ftp", "hf"])
@pytest.mark.parametrize("path", list(LEAVES), ids=" ".join)
def test_an_unsupported_url_scheme_is_one_error_line(path, scheme, tmp_path, capsys):
    assert main(_argv(path, f"{scheme}://host/x", str(tmp_path / "out"), url_case=True)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{scheme}:// is not a supported storage scheme" in line
    assert "s3://" in line and "local path" in line


@pytest.fixture(scope="module")
def dead_profiles(tmp_path_factory) -> tuple[str, str]:
    """(profiles file, endpoint): a storage profile ``dead`` whose endpoint is a closed loopback
    port. One per module: the check keeps an S3 client per storage settings (~0.5 s each)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"  # closed when the block ends
    profiles = tmp_path_factory.mktemp("profiles") / "storage.toml"
    profiles.write_text(f'[profiles.dead]\nclient_kwargs = {{ endpoint_url = "{endpoint}" }}\n')
    return str(profiles), endpoint


@pytest.fixture
def dead_endpoint(dead_profiles, monkeypatch) -> str:
    """The ``dead`` profile selectable; dummy credentials (a request is signed before it is
    sent)."""
    monkeypatch.setenv("S2DIT_STORAGE_PROFILES", dead_profiles[0])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return dead_profiles[1]


@pytest.mark.parametrize("path", list(LEAVES), ids=" ".join)
def test_an_unreachable_endpoint_is_one_error_line_within_seconds(path, dead_endpoint, tmp_path,
                                                                  capsys):
    argv = _argv(path, "s3://bucket/x", str(tmp_path / "out"), url_case=True)
    started = time.monotonic()
    assert main([*argv, "--storage-profile", "dead"]) == 2
    seconds = time.monotonic() - started
    line = _one_error_line(capsys.readouterr().err)
    assert f"cannot reach endpoint {dead_endpoint} within" in line, line
    assert "check endpoint_url in storage profile 'dead'" in line
    assert seconds < 8, seconds  # botocore's own retries took 13 s


def test_a_missing_bucket_an_unreachable_endpoint_and_a_missing_cache_are_told_apart(
        s3_bucket, dead_endpoint, tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    (tmp_path / "job" / "shards").mkdir(parents=True)
    cases = [  # (argv, what the line says)
        (["cache", "ls", "s3://no-such-bucket-29/cache"],
         "bucket 'no-such-bucket-29' does not exist at http://127.0.0.1:"),
        (["cache", "ls", f"{s3_bucket}/cache", "--storage-profile", "dead"],
         f"cannot reach endpoint {dead_endpoint} within 3 s for {s3_bucket}/cache (connection refused)"),
        (["cache", "ls", f"{s3_bucket}/cache"],
         f"no cache at {s3_bucket}/cache (nothing there): run `s2dit cache generate`"),
        (["cache", "show", str(tmp_path / "folder")],
         f"no cache at {tmp_path / 'folder'} (no manifests/): run `s2dit cache generate`"),
        (["cache", "verify", str(tmp_path / "job")],
         "holds no committed generation yet (no manifests/*.json): the job writing it"),
        (["train", "kd", "--cache", f"{s3_bucket}/cache", "--out", str(tmp_path / "run")],
         f"no cache at {s3_bucket}/cache"),
        (["cache", "log", "s3://no-such-bucket-29/cache"], "bucket 'no-such-bucket-29' does not exist"),
        (["cache", "gc", str(tmp_path / "nothing")], "(nothing there)"),
    ]
    for argv, expected in cases:
        started = time.monotonic()
        assert main(argv) == 2, argv
        assert expected in _one_error_line(capsys.readouterr().err), argv
        assert time.monotonic() - started < 8, argv
    assert not (tmp_path / "run").exists()


def test_an_unreachable_endpoint_met_later_is_still_named(dead_endpoint):
    """A connection that fails after the check (a URL inside a config file) reads the same."""
    from botocore.exceptions import EndpointConnectionError

    from pipeline.commands.errors import describe

    exc = EndpointConnectionError(endpoint_url=f"{dead_endpoint}/bucket/key",
                                  error=ConnectionRefusedError(111, "refused"))
    assert describe(exc).startswith(f"cannot reach endpoint {dead_endpoint} (connection refused): ")


def test_a_run_configs_own_urls_are_checked_before_any_stage(dead_endpoint, tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('[run]\nout = "s3://bucket/run"\n[corpus]\nkind = "analytic"\n')
    assert main(["run", str(config), "--plan", "--storage-profile", "dead"]) == 2
    assert f"cannot reach endpoint {dead_endpoint}" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("argv", [
    ["train", "kd", "--cache", "{cache}", "--out", "{tmp}/run", "--device", "cuda"],
    ["train", "kd", "--cache", "{cache}", "--out", "{tmp}/run", "--config", "{tmp}/cuda.toml"],
    ["train", "ar", "--init", "{tmp}/kd", "--cache", "{cache}", "--out", "{tmp}/run", "--device",
     "cuda"],
    ["sample", "--checkpoint", "{tmp}/kd", "--prompt", "a red ring", "--device", "cuda",
     "--out", "{tmp}/run/s"],
])
def test_cuda_on_a_machine_without_it_is_one_error_line_before_any_model(argv, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "cuda.toml").write_text('[train]\ndevice = "cuda"\n')
    cache = tmp_path / "cache"  # never opened: the device is refused first
    assert main([a.format(tmp=tmp_path, cache=cache) for a in argv]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "'cuda'" in line and "--device cpu" in line and "CUDA build of torch" in line, line
    assert not (tmp_path / "run").exists()


def test_the_matrix_covers_every_leaf():
    """OPTIONAL_INPUT names only real leaves, and every leaf either has a required argument
    the matrix can make bad or an entry there saying what to give it."""
    assert set(OPTIONAL_INPUT) <= set(LEAVES)
    for path, leaf in LEAVES.items():
        takes = [a for a in _required(leaf) if a.dest not in OUTPUTS | WORDS and a.type is None]
        assert takes or path in OPTIONAL_INPUT, f"{' '.join(path)}: add it to OPTIONAL_INPUT"
