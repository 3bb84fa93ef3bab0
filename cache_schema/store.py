"""Object-store access by URL: fsspec filesystems, create-only puts, retries, @refs, profiles.

A ``Store`` is a cache's root folder on any fsspec URL (plain path, ``file://``, ``s3://``,
``memory://``). S3 endpoints and credentials come from the standard AWS environment
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``~/.aws/config``) which s3fs reads itself, or from
a named storage profile; none of it is ever written into a manifest.

Storage profiles (``--storage-profile NAME``): a profile is fsspec storage options for one
protocol (``s3`` unless it says ``protocol = "..."``), read from ``$S2DIT_STORAGE_PROFILES`` or
``~/.config/s2dit/storage.toml``. ``use_profile`` selects one for the whole process: it becomes
fsspec's default for that protocol, so every filesystem s2dit opens (stores, checkpoints, run
folders, corpora) uses it: it is the one channel for storage options, which no function takes
as a parameter. Ray workers get only ``storage_env()`` (the profile's name, the profiles file's
path and the non-secret AWS names) and call ``apply_storage_env``.
Profiles hold endpoints and tuning, never credentials (a credential key is refused).
"""

from __future__ import annotations

import os
import posixpath
import random
import re
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import fsspec
import fsspec.config
from fsspec.implementations.local import LocalFileSystem

from . import paths
from .errors import AlreadyExists, StoreError

T = TypeVar("T")

PROFILES_ENV = "S2DIT_STORAGE_PROFILES"  # path of the profiles file
PROFILE_ENV = "S2DIT_STORAGE_PROFILE"  # name of the selected profile
DEFAULT_PROFILES = Path("~/.config/s2dit/storage.toml")
# What a Ray worker needs to reach the driver's storage: where it is, which profile, where the
# credentials live. Never a key, secret or token: Ray records what it is given (runtime_env in
# its logs), so a worker reads those from its own environment, a credentials file or a role.
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE",
                 "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", PROFILES_ENV, PROFILE_ENV)
# Option names that carry credentials in fsspec back ends (s3fs, gcsfs, adlfs, botocore).
CREDENTIAL_KEYS = frozenset({"key", "secret", "token", "password", "aws_access_key_id",
                             "aws_secret_access_key", "aws_session_token", "session_token",
                             "account_key", "sas_token", "client_secret", "credentials"})
# The URL schemes s2dit reads and writes (caches, run folders, checkpoints, corpora); a plain
# path is local. Others fsspec knows (ftp://, hf://, http://) are refused by the CLI up front.
STORAGE_SCHEMES = ("file", "s3", "gs", "gcs", "memory")
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://")
_REF = re.compile(r"^(?P<base>.+?)@(?P<ref>[A-Za-z0-9_.\-]+)$")
# Errors worth retrying: connection drops, throttling, 5xx. Missing objects are not.
_TRANSIENT = (ConnectionError, TimeoutError, OSError)
_JITTER = random.Random()  # retry timing only; never part of any output
_PERMANENT = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
              NotADirectoryError)


def split_ref(url: str) -> tuple[str, str | None]:
    """``s3://b/cache@3`` -> (``s3://b/cache``, ``"3"``); the ref lives in the last segment only."""
    head, _, last = url.rstrip("/").rpartition("/")
    match = _REF.match(last)
    if not match:
        return url.rstrip("/"), None
    base = f"{head}/{match['base']}" if head else match["base"]
    return base, match["ref"]


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password if "://" in url else None
    except ValueError:  # not a URL fsspec could open either; its own error says so
        return None


def redact_url(url: str) -> str:
    """``url`` with the password of its user-info part (``scheme://user:PASSWORD@host``) masked."""
    secret = _password(url)
    return url.replace(f":{secret}@", ":***@", 1) if secret else url


def refuse_url_credentials(url: str, what: str = "URL") -> None:
    """A URL carrying a password is refused: URLs are recorded (manifests, lineage, job
    reports, run configs) and printed, so a password in one would end up in all of them."""
    if _password(url):
        raise StoreError(f"{what} {redact_url(url)} carries a password; credentials never go in "
                         "URLs (they are recorded in manifests and reports): put them in the "
                         "environment, ~/.aws/credentials or an instance role, and the endpoint "
                         "in a storage profile")


def refuse_unsupported_scheme(url: str, what: str = "URL") -> None:
    """A URL whose scheme is none of ``STORAGE_SCHEMES`` is refused, naming the supported ones."""
    match = _SCHEME.match(url)
    if match and match["scheme"].lower() not in STORAGE_SCHEMES:
        supported = ", ".join(f"{s}://" for s in STORAGE_SCHEMES)
        raise StoreError(f"{what} {redact_url(url)}: {match['scheme']}:// is not a supported "
                         f"storage scheme; use a local path or one of {supported}")


def absolute_url(url: str) -> str:
    """A local path made absolute (``~`` expanded, an ``@ref`` kept); a URL with a scheme as it
    is. What reaches Ray actors, Ray Train workers and recorded state goes through this: a
    worker's working directory is not the driver's (Ray Train runs each in its trial folder)."""
    if not url or _SCHEME.match(url):
        return url
    return os.path.abspath(os.path.expanduser(url))


def profiles_path() -> Path:
    return Path(os.environ.get(PROFILES_ENV) or DEFAULT_PROFILES).expanduser()


def _credential_keys(options: dict[str, Any], prefix: str = "") -> list[str]:
    found = []
    for key, value in options.items():
        if str(key).lower() in CREDENTIAL_KEYS:
            found.append(prefix + str(key))
        if isinstance(value, dict):
            found += _credential_keys(value, f"{prefix}{key}.")
    return found


def read_profile(name: str) -> tuple[str, dict[str, Any]]:
    """(protocol, storage options) of a named profile; a missing file, an unknown name or a
    profile carrying a credential is one StoreError naming the profile and the file."""
    path = profiles_path()
    if not path.exists():
        raise StoreError(f"storage profile {name!r} requested but the profiles file {path} does "
                         f"not exist; create it (see infra/storage/profiles.toml) or set "
                         f"{PROFILES_ENV} to its path")
    try:
        profiles = tomllib.loads(path.read_text()).get("profiles", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise StoreError(f"storage profile {name!r}: cannot read profiles file {path}: {exc}") from None
    if not isinstance(profiles.get(name), dict):
        raise StoreError(f"storage profile {name!r} is not in {path} (known: {sorted(profiles)}); "
                         f"add a [profiles.{name}] table or pick a known one")
    options = dict(profiles[name])
    protocol = options.pop("protocol", "s3")
    if secrets := _credential_keys(options):
        # names only: the values are secrets and must not reach a terminal or a log
        raise StoreError(f"storage profile {name!r} in {path} carries credentials ({', '.join(secrets)}); "
                         "profiles hold endpoints and tuning only: keep credentials in the AWS "
                         "environment, ~/.aws/credentials or an instance role")
    if not isinstance(protocol, str) or not protocol:
        raise StoreError(f"storage profile {name!r} in {path}: protocol must be a name like 's3'")
    return protocol, options


def _install(name: str) -> None:
    """Make profile ``name`` fsspec's process-wide default for its protocol."""
    protocol, options = read_profile(name)
    fsspec.config.conf[protocol] = {**fsspec.config.conf.get(protocol, {}), **options}
    os.environ[PROFILE_ENV] = name  # subprocesses and storage_env() carry the name on


@contextmanager
def use_profile(name: str | None = None) -> Iterator[str | None]:
    """Select storage profile ``name`` (default: ``$S2DIT_STORAGE_PROFILE``) for this process
    while the block runs; yields the name (None: no profile). The previous fsspec defaults and
    environment come back afterwards, so one process can run commands with different profiles."""
    name = name or os.environ.get(PROFILE_ENV) or None
    if name is None:
        yield None
        return
    saved_conf = {k: dict(v) for k, v in fsspec.config.conf.items()}
    saved_env = os.environ.get(PROFILE_ENV)
    try:
        _install(name)
        yield name
    finally:
        fsspec.config.conf.clear()
        fsspec.config.conf.update(saved_conf)
        if saved_env is None:
            os.environ.pop(PROFILE_ENV, None)
        else:
            os.environ[PROFILE_ENV] = saved_env


def storage_env() -> dict[str, str]:
    """The non-secret storage settings of this process, for a Ray worker (``FORWARDED_ENV``)."""
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    if PROFILES_ENV not in env and PROFILE_ENV in env:
        env[PROFILES_ENV] = str(profiles_path())  # the default path, made explicit
    return env


def apply_storage_env(env: dict[str, str] | None) -> None:
    """In a Ray worker: adopt the driver's ``storage_env()`` and install its profile (for the
    worker's lifetime). Anything but the forwarded names is refused, so a caller cannot route
    a secret through here by mistake."""
    if not env:
        return
    unknown = sorted(set(env) - set(FORWARDED_ENV))
    if unknown:
        raise StoreError(f"storage settings for a worker may only name {FORWARDED_ENV}; got {unknown}")
    os.environ.update(env)
    if env.get(PROFILE_ENV):
        _install(env[PROFILE_ENV])


def with_retries(op: Callable[[], T], what: str, *, attempts: int = 5, base_delay: float = 0.2,
                 max_delay: float = 5.0, rng: random.Random | None = None) -> T:
    """``op()``, retried on transient errors with exponential backoff and jitter (a random
    50-100% of ``base_delay * 2**attempt``, at most ``max_delay``): writers retrying together
    after a throttling response spread out instead of arriving at once again."""
    draw = (rng or _JITTER).uniform
    for attempt in range(attempts):
        try:
            return op()
        except _PERMANENT:
            raise
        except _TRANSIENT as exc:
            if attempt == attempts - 1:
                raise StoreError(f"{what} failed after {attempts} attempts: {exc}") from exc
            time.sleep(min(max_delay, base_delay * 2**attempt) * draw(0.5, 1.0))
    raise AssertionError("unreachable")


@dataclass
class Store:
    """A folder on an fsspec filesystem; all paths are relative to ``root``."""

    fs: fsspec.AbstractFileSystem
    root: str  # protocol-less root path as the filesystem expects it
    url: str  # the user-facing URL of the root

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def url_of(self, rel: str) -> str:
        return f"{self.url}/{rel}" if rel else self.url

    def exists(self, rel: str) -> bool:
        return with_retries(lambda: self.fs.exists(self.path(rel)), f"exists {self.url_of(rel)}")

    def read_bytes(self, rel: str) -> bytes:
        try:
            return with_retries(lambda: self.fs.cat_file(self.path(rel)), f"read {self.url_of(rel)}")
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.url_of(rel)} does not exist") from None

    def size(self, rel: str) -> int:
        return int(with_retries(lambda: self.fs.size(self.path(rel)), f"size {self.url_of(rel)}"))

    def list(self, rel: str) -> list[str]:
        """Relative paths of the objects directly below ``rel`` (empty when absent)."""
        base = self.path(rel)
        try:
            self.fs.invalidate_cache(base)
            names = with_retries(lambda: self.fs.ls(base, detail=False), f"list {self.url_of(rel)}")
        except FileNotFoundError:
            return []
        strip = self.root.rstrip("/") + "/"
        return sorted(n.removeprefix(strip) for n in names)

    def walk_files(self, rel: str) -> dict[str, int]:
        """{relative path: size} of every object below ``rel``."""
        base = self.path(rel)
        self.fs.invalidate_cache(base)
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        strip = self.root.rstrip("/") + "/"
        return {n[len(strip):]: int(info["size"]) for n, info in found.items()}

    def put_bytes(self, rel: str, data: bytes) -> None:
        """Plain put (overwrites). Used only for objects no manifest references yet."""
        path = self.path(rel)
        if self.is_local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        with_retries(lambda: self.fs.pipe_file(path, data), f"write {self.url_of(rel)}")

    def put_create_only(self, rel: str, data: bytes) -> None:
        """Write ``rel`` only if absent, atomically; raise AlreadyExists otherwise."""
        path = self.path(rel)
        if self.is_local:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, target)  # atomic and fails if target exists: a create-only rename
            except FileExistsError:
                raise AlreadyExists(f"{self.url_of(rel)} already exists") from None
            finally:
                tmp.unlink()
            return
        try:
            with_retries(lambda: self.fs.pipe_file(path, data, mode="create"),
                         f"create {self.url_of(rel)}")
        except FileExistsError:
            # s3fs skips its cache invalidation on this path: a stale listing would then answer
            # "missing" for the object that exists (our own put whose reply was lost, retried)
            self.fs.invalidate_cache(path)
            raise AlreadyExists(f"{self.url_of(rel)} already exists") from None
        except TypeError:  # a filesystem without exclusive create: check, then put
            if self.fs.exists(path):
                raise AlreadyExists(f"{self.url_of(rel)} already exists") from None
            self.fs.pipe_file(path, data)

    def delete(self, rel: str) -> None:
        with_retries(lambda: self.fs.rm(self.path(rel), recursive=True), f"delete {self.url_of(rel)}")

    def modified(self, rel: str) -> float | None:
        try:
            stamp = self.fs.modified(self.path(rel))
        except (FileNotFoundError, NotImplementedError, OSError):
            return None
        return stamp.timestamp() if hasattr(stamp, "timestamp") else None


_split_scheme = paths.split_scheme


def relative_root(target: str, base: str) -> str:
    """Cache URL ``target`` as seen from cache ``base``: a relative path (``../src``) when both
    are on one filesystem (same scheme, and same bucket for object stores), so caches that
    reference each other can be moved or copied together; ``target`` itself otherwise."""
    target_scheme, target_path = _split_scheme(target)
    base_scheme, base_path = _split_scheme(base)
    if target_scheme != base_scheme:
        return target
    if target_scheme and target_path.split("/", 1)[0] != base_path.split("/", 1)[0]:
        return target  # another bucket
    return posixpath.relpath(target_path, base_path)


def resolve_root(base: str, root: str) -> str:
    """The URL of ``root``, relative to cache ``base`` as ``relative_root`` wrote it; an absolute
    path, another scheme or a climb out of the bucket is a ManifestError (``paths``)."""
    return paths.resolve_root(base, root)


def open_store(url: str) -> Store:
    """A Store for a cache root URL (refs like ``@3`` must be split off first). Its filesystem
    takes its options from the selected storage profile (``use_profile``), the one channel."""
    if not url:
        raise StoreError("empty cache URL: give a folder path or an fsspec URL like s3://bucket/cache")
    refuse_url_credentials(url, "cache URL")
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ValueError, ImportError) as exc:
        raise StoreError(f"cannot open cache URL {url!r}: {exc}") from exc
    root = root.rstrip("/")
    if isinstance(fs, LocalFileSystem):
        root = str(Path(root).resolve())
        url = root
    return Store(fs=fs, root=root, url=url.rstrip("/"))
