"""Shared fixtures: a real S3 server on loopback (moto server mode) and a local Ray runtime."""

from __future__ import annotations

import os
import socket
import uuid

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3 server on 127.0.0.1; yields its endpoint URL. s3fs reaches it over HTTP."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                            "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                            "AWS_SHARED_CREDENTIALS_FILE")}
    # Dummy credentials in a credentials file as well: jobs forward only its path to Ray
    # workers (never a key), and a session Ray runtime started before this fixture has workers
    # whose environment lacks the variables below.
    credentials = tmp_path_factory.mktemp("aws") / "credentials"
    credentials.write_text("[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    # The standard AWS variables, exactly as a user's environment would carry them.
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing",
                      AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      AWS_SHARED_CREDENTIALS_FILE=str(credentials))
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh bucket per test; yields ``s3://bucket``."""
    import s3fs

    name = f"t-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}, skip_instance_cache=True)
    fs.mkdir(name)
    s3fs.S3FileSystem.clear_instance_cache()
    return f"s3://{name}"


@pytest.fixture
def one_thread():
    """Torch on one thread: tiny tensors gain nothing from threads, and on a busy 2-core machine
    thread barriers make them slow. Modules opt in with ``pytest.mark.usefixtures``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ray_runtime(tmp_path_factory):
    """One local Ray runtime per test session (starting one costs ~5 s and ~0.5 GB)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    temp_dir = tmp_path_factory.mktemp("ray")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(temp_dir), ignore_reinit_error=True,
             log_to_driver=False)
    yield ray
    ray.shutdown()


# Modules whose memory bounds start tracemalloc (test_fuzz_parsers.traced_peak) run last: tracing
# cannot be stopped safely (stopping it while a native pyarrow thread allocates crashed the
# interpreter, session 7 and again in session 13's CI), and left on it traces every allocation of
# every later test (the suite took about 1.6x as long).
TRACING_MODULES = ("test_fuzz_parsers.py", "test_frame_bounds.py")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.path.name in TRACING_MODULES)  # stable: the rest keep their order


@pytest.fixture(scope="session", autouse=True)
def _eval_reference_cache(tmp_path_factory):
    """Evaluations in tests (and the runs they start) keep the teacher's reference samples in a
    temporary directory, never in the user's ~/.cache (pipeline.eval_reference)."""
    saved = os.environ.get("S2DIT_EVAL_CACHE")
    os.environ["S2DIT_EVAL_CACHE"] = str(tmp_path_factory.mktemp("eval_reference"))
    yield
    if saved is None:
        os.environ.pop("S2DIT_EVAL_CACHE", None)
    else:
        os.environ["S2DIT_EVAL_CACHE"] = saved
