"""An object-store URL checked before a command starts: is its endpoint there, does its bucket
exist? Each answered in a few seconds, in a line that says what to do.

Left to themselves, botocore (legacy retry mode) and s3fs retry a refused connection for 10 s
and more, then say "Could not connect to the endpoint URL" without saying where the endpoint
came from; a missing bucket lists as empty, so it reads as an empty cache. ``check_reachable``
asks the bucket once (HeadBucket) with a bounded connect timeout instead. The long retries stay
for everything after it: a connection that drops in the middle of a job is worth waiting for, a
wrong endpoint is not.
"""

from __future__ import annotations

import json
import os
from urllib.parse import urlsplit

import fsspec
import fsspec.config

from .errors import StoreError
from .store import _SCHEME, FORWARDED_ENV, PROFILE_ENV, profiles_path, redact_url, split_ref

CONNECT_TIMEOUT_S = 3.0  # per connection attempt of the check
READ_TIMEOUT_S = 10.0  # a connected endpoint that does not answer: left to the command itself
CONNECT_ATTEMPTS = 2  # for connect timeouts only: a refused connection or unknown host is final
CHECKED_SCHEMES = ("s3",)
# Connection errors by class name (botocore's), so that nothing is imported for local paths.
_UNREACHABLE = {"EndpointConnectionError", "ConnectTimeoutError"}
_reachable: set[str] = set()  # buckets (with their settings) that answered in this process
_clients: dict[str, fsspec.AbstractFileSystem] = {}  # one per storage settings: a client costs ~0.5 s


def endpoint_hint() -> str:
    """Where the endpoint of an S3 URL came from, i.e. what to check."""
    profile = os.environ.get(PROFILE_ENV)
    if profile:
        return f"check endpoint_url in storage profile {profile!r} ({profiles_path()})"
    if os.environ.get("AWS_ENDPOINT_URL"):
        return "check AWS_ENDPOINT_URL"
    return ("check the network; an S3-compatible store needs its endpoint in a storage profile "
            "(--storage-profile) or AWS_ENDPOINT_URL")


def unreachable_message(exc: BaseException, url: str | None = None,
                        within: float | None = None) -> str | None:
    """The line for a failed connection (botocore's EndpointConnectionError or
    ConnectTimeoutError), naming the endpoint and what to check; None for any other error."""
    if type(exc).__name__ not in _UNREACHABLE:
        return None
    kwargs = getattr(exc, "kwargs", {}) or {}
    parts = urlsplit(str(kwargs.get("endpoint_url", "")))
    endpoint = f"{parts.scheme}://{parts.netloc}" if parts.netloc else "the S3 endpoint"
    cause = repr(kwargs.get("error", ""))
    reason = ("connection refused" if "ConnectionRefused" in cause else
              "unknown host" if "DNS" in cause or "gaierror" in cause else
              "connect timeout" if type(exc).__name__ == "ConnectTimeoutError" else "no connection")
    when = f" within {within:g} s" if within else ""
    where = f" for {redact_url(url)}" if url else ""
    return f"cannot reach endpoint {endpoint}{when}{where} ({reason}): {endpoint_hint()}"


def check_reachable(url: str) -> None:
    """For an ``s3://`` URL: a StoreError unless its endpoint answers within
    ``CONNECT_TIMEOUT_S`` (``CONNECT_ATTEMPTS`` for timeouts) and its bucket exists. Any other
    answer (access denied, throttling, no credentials) passes: the command's own request
    reports it. Other URLs and local paths: nothing. A bucket that answered is not asked again
    in this process (with the same storage settings)."""
    match = _SCHEME.match(url)
    if not match or match["scheme"].lower() not in CHECKED_SCHEMES:
        return
    bucket = split_ref(url)[0][match.end():].split("/", 1)[0]
    if not bucket:
        return
    conf = fsspec.config.conf.get("s3", {})
    env = {k: os.environ.get(k) for k in (*FORWARDED_ENV, "AWS_ACCESS_KEY_ID")}
    settings = json.dumps([conf, env], sort_keys=True, default=str)
    key = f"{bucket}\n{settings}"
    if key in _reachable:
        return
    fs = _clients.get(settings)
    if fs is None:
        config = {**conf.get("config_kwargs", {}), "connect_timeout": CONNECT_TIMEOUT_S,
                  "read_timeout": READ_TIMEOUT_S,
                  "retries": {"total_max_attempts": 1, "mode": "standard"}}
        fs = _clients[settings] = fsspec.filesystem("s3", skip_instance_cache=True,
                                                    config_kwargs=config)
        fs.retries = 1  # s3fs's own retry loop: one call
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            fs.call_s3("head_bucket", Bucket=bucket)
        except FileNotFoundError:
            endpoint = getattr(getattr(fs, "s3", None), "meta", None)
            at = f" at {endpoint.endpoint_url}" if endpoint is not None else ""
            raise StoreError(f"bucket {bucket!r} does not exist{at} (for {redact_url(url)}): "
                             "create it or check the name") from None
        except Exception as exc:  # noqa: BLE001 - any other answer is the command's to report
            message = unreachable_message(exc, url, CONNECT_TIMEOUT_S)
            if message is None:
                return  # access denied, no credentials...: its own request says so
            if attempt < CONNECT_ATTEMPTS and type(exc).__name__ == "ConnectTimeoutError":
                continue
            raise StoreError(message) from None
        _reachable.add(key)
        return
