"""The fault proxy as a fixture: S3 traffic of the test goes through it (AWS_ENDPOINT_URL)."""

from __future__ import annotations

import os

import pytest

from faults.fault_proxy import FaultProxy, Schedule


@pytest.fixture
def fault_proxy(s3_server, monkeypatch):
    """A started proxy in front of moto with faults off (set ``proxy.schedule`` to turn them
    on with ``set_schedule``); s3fs clients created in the test reach S3 through it."""
    import s3fs

    proxy = FaultProxy(s3_server, Schedule(rate=0.0)).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    s3fs.S3FileSystem.clear_instance_cache()
    yield proxy
    proxy.stop()
    s3fs.S3FileSystem.clear_instance_cache()
    assert os.environ["AWS_ENDPOINT_URL"] == proxy.url
