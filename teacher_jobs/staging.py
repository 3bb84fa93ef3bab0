"""Teacher weights staged once, then loaded from the staged copy everywhere (issue 27).

``s2dit teacher stage SOURCE --to URL`` copies a checkpoint folder (a local folder, or a hub id
at a pinned commit) to object storage or a shared folder, then writes ``s2dit-staged.json``
beside it: the source, the revision, and the sha256 and size of every file. The digest file is
written last and create-only, so its presence means a complete copy, and a copy is never
replaced by a different one (staging the same content again is a no-op).

On a node, ``materialize(URL)`` turns the staged copy into a local folder whose files match the
digest file: an object-store copy is downloaded into a node-local cache (hashed as it arrives),
a shared folder is hashed in place. Either happens once per node: a marker file keyed by the
digest file's own sha256 records the check, and a file lock makes the other actors of the node
wait for it instead of checking again. Nothing here talks to the hub except ``stage`` for a hub
id, and that reads ``HF_TOKEN`` from its environment only (huggingface_hub does), never from an
argument, a config or a file this module writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from cache_schema.errors import AlreadyExists
from cache_schema.store import Store, open_store, redact_url
from cache_schema.words import count

DIGEST_FILE = "s2dit-staged.json"
FORMAT, VERSION = "s2dit-staged-checkpoint", 1
CACHE_ENV = "S2DIT_STAGED_CACHE"  # node-local folder for downloaded copies and markers
DEFAULT_CACHE = Path("~/.cache/s2dit/staged")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
# The shipped configs carry this until the platform team fills in the commit it staged.
PLACEHOLDER_REVISION = "0" * 40
PICKLED = (".bin", ".pth", ".pt", ".ckpt", ".pkl")  # never staged: loading them unpickles
CHUNK = 1 << 24


class StagingError(ValueError):
    """A staged copy that cannot be made or used; the message says which file and what to do."""


@dataclass(frozen=True, slots=True)
class StagedFile:
    sha256: str
    size: int


@dataclass(kw_only=True, slots=True)
class StageRecord:
    """The digest file's content: what was staged, from where, at which commit."""

    source: str  # hub id or the local folder it was staged from (as given)
    revision: str | None  # the hub commit of the weights (None: a local folder of unknown origin)
    files: dict[str, StagedFile] = field(default_factory=dict)  # relative path -> digest

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files.values())

    def sha256s(self) -> dict[str, str]:
        return {rel: f.sha256 for rel, f in self.files.items()}

    def to_bytes(self) -> bytes:
        """Deterministic (sorted keys, no timestamps): the same content, the same digest."""
        body = {"format": FORMAT, "version": VERSION, "source": self.source,
                "revision": self.revision, "total_bytes": self.total_bytes,
                "files": {rel: {"sha256": f.sha256, "size": f.size}
                          for rel, f in sorted(self.files.items())}}
        return json.dumps(body, indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_bytes(cls, raw: bytes, where: str) -> StageRecord:
        """Parse and check a digest file (it is input: paths must stay inside the copy)."""
        try:
            body = json.loads(raw)
            if body.get("format") != FORMAT or body.get("version") != VERSION:
                raise ValueError(f"format {body.get('format')!r} version {body.get('version')!r}")
            files = {}
            for rel, item in body["files"].items():
                check_relative(rel)
                digest, size = str(item["sha256"]), int(item["size"])
                if not re.fullmatch(r"[0-9a-f]{64}", digest) or size < 0:
                    raise ValueError(f"bad entry for {rel}")
                files[rel] = StagedFile(digest, size)
            revision = body["revision"]
            if revision is not None and not COMMIT.match(str(revision)):
                raise ValueError(f"revision {revision!r} is not a commit")
            return cls(source=str(body["source"]), revision=revision, files=files)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StagingError(f"{where} is not a digest file of `s2dit teacher stage` ({exc})") from None

    def same_content(self, other: StageRecord) -> bool:
        return self.revision == other.revision and self.files == other.files


def check_relative(rel: str) -> None:
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or not rel or rel == DIGEST_FILE:
        raise ValueError(f"file path {rel!r} leaves the staged folder")


def check_commit(revision: str | None, what: str) -> str:
    """A 40-hex commit sha; a branch, tag or nothing is refused (a branch moves under a job)."""
    if revision is None or not COMMIT.match(revision):
        got = "no revision" if revision is None else f"{revision!r}"
        raise StagingError(f"{what} must be pinned to a 40-hex commit sha, got {got}: a branch "
                           "such as 'main' moves, and every actor would load whatever it is "
                           "that day (find the commit on the model page's 'Files' tab, or "
                           "`hf models info OWNER/NAME`)")
    return revision


def hash_file(path: Path) -> StagedFile:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            h.update(block)
            size += len(block)
    return StagedFile(h.hexdigest(), size)


def hash_object(store: Store, rel: str) -> StagedFile:
    h, size = hashlib.sha256(), 0
    with store.fs.open(store.path(rel), "rb") as handle:
        while block := handle.read(CHUNK):
            h.update(block)
            size += len(block)
    return StagedFile(h.hexdigest(), size)


# -- staging (one machine, once) ---------------------------------------------------------------
def source_folder(source: str, revision: str | None) -> tuple[Path, str | None]:
    """The local folder holding ``source`` and the commit it is at. A hub id is downloaded at
    ``revision`` (a commit sha) into the hub cache; a local folder's commit is ``revision`` or,
    for a folder inside the hub cache (``.../snapshots/<sha>``), the sha in its path."""
    if os.path.isdir(source):
        folder = Path(source).resolve()
        if revision is not None:
            return folder, check_commit(revision, "--revision")
        inferred = folder.name if folder.parent.name == "snapshots" and COMMIT.match(folder.name) else None
        return folder, inferred
    if source.startswith((".", "/")) or source.count("/") != 1:
        raise StagingError(f"{source!r} is neither a local folder nor a hub id (owner/name)")
    check_commit(revision, f"--revision for hub id {source}")
    from huggingface_hub import snapshot_download

    try:  # HF_TOKEN, if the repository needs one, comes from the environment: never passed here
        return Path(snapshot_download(source, revision=revision)), revision
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, gated: one readable line
        first = str(exc).split(". ")[0].splitlines()[0][:200] if str(exc) else ""
        reason = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        raise StagingError(f"cannot download {source}@{revision[:12]} from the hub ({reason}). "
                           "Stage where the hub is reachable (with HF_TOKEN in the environment "
                           "for gated repositories), or download the folder there and stage it "
                           "from a local path with --revision") from None


def list_files(folder: Path) -> list[str]:
    names = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if rel.startswith(".") or "/." in rel or not path.is_file() or rel == DIGEST_FILE:
            continue
        if rel.endswith(PICKLED):
            raise StagingError(f"{folder}/{rel}: pickled weights are not staged (loading them "
                               "runs code); convert the checkpoint to safetensors")
        names.append(rel)
    if not names:
        raise StagingError(f"{folder} holds no files to stage")
    return names


@dataclass(kw_only=True, slots=True)
class StageResult:
    url: str  # the staged copy
    record: StageRecord
    digest: str  # sha256 of the digest file's bytes (what a fingerprint records)
    copied: int = 0  # files written
    kept: int = 0  # files already there with the right bytes (an interrupted stage resumed)
    noop: bool = False  # the same content was staged already


def stage(source: str, to: str, *, revision: str | None = None,
          log: Callable[[str], None] = print) -> StageResult:
    """Copy ``source`` to ``to`` once and write the digest file last (create-only)."""
    folder, revision = source_folder(source, revision)
    names = list_files(folder)
    log(f"hashing {count(len(names), 'file')} of {source}")
    record = StageRecord(source=str(folder) if os.path.isdir(source) else source, revision=revision,
                         files={rel: hash_file(folder / rel) for rel in names})
    store = open_store(to)
    raw = record.to_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    existing = _existing(store, record)
    if existing is not None:
        return StageResult(url=store.url, record=record, digest=digest, noop=True)
    result = StageResult(url=store.url, record=record, digest=digest)
    for rel in names:
        want = record.files[rel]
        if store.exists(rel) and store.size(rel) == want.size and hash_object(store, rel) == want:
            result.kept += 1  # left by an interrupted stage: no digest file names it yet
            continue
        log(f"copying {rel} ({want.size / 1e9:.2f} GB)")
        _put(store, folder / rel, rel)
        if store.size(rel) != want.size:
            raise StagingError(f"{store.url_of(rel)}: wrote {store.size(rel)} bytes, expected "
                               f"{want.size}; stage again to retry")
        result.copied += 1
    try:
        store.put_create_only(DIGEST_FILE, raw)
    except AlreadyExists:  # another stage finished first: fine if it staged the same bytes
        _existing(store, record)  # raises if it staged a different copy
        result.noop = True
    return result


def _existing(store: Store, record: StageRecord) -> StageRecord | None:
    """The copy already staged at ``store`` if it holds ``record``'s content; None if nothing
    is staged there; StagingError if a different copy is (never overwritten)."""
    if not store.exists(DIGEST_FILE):
        return None
    where = store.url_of(DIGEST_FILE)
    old = StageRecord.from_bytes(store.read_bytes(DIGEST_FILE), redact_url(where))
    if old.same_content(record):
        return old
    changed = sorted(rel for rel in set(old.files) | set(record.files)
                     if old.files.get(rel) != record.files.get(rel))
    what = (f"revision {old.revision} (this one {record.revision})" if old.revision != record.revision
            else f"files that differ: {len(changed)}, first {changed[0]}")
    raise StagingError(f"{redact_url(store.url)} already holds a different staged copy ({what}): "
                       "a staged copy is never overwritten; stage to another URL (one per "
                       "revision, e.g. .../wan22-t2v-a14b-<sha[:12]>)")


def _put(store: Store, local: Path, rel: str) -> None:
    target = store.path(rel)
    if store.is_local:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, target)
    else:
        store.fs.put_file(str(local), target)  # multipart for large files (s3fs)


# -- loading (every node, verified once) -------------------------------------------------------
@dataclass(kw_only=True, slots=True)
class StagedCopy:
    url: str
    record: StageRecord
    digest: str  # sha256 of the digest file
    folder: Path  # local folder holding the files (node-local download or the shared folder)


def read_record(url: str) -> tuple[Store, StageRecord, str]:
    store = open_store(url)
    where = redact_url(store.url_of(DIGEST_FILE))
    try:
        raw = store.read_bytes(DIGEST_FILE)
    except FileNotFoundError:
        raise StagingError(f"{where} does not exist: {redact_url(url)} is not a complete staged "
                           "copy (run `s2dit teacher stage SOURCE --to URL` first)") from None
    return store, StageRecord.from_bytes(raw, where), hashlib.sha256(raw).hexdigest()


def check_revision(record: StageRecord, revision: str | None, url: str) -> None:
    check_commit(revision, "revision (staged weights)")
    if revision == PLACEHOLDER_REVISION:
        raise StagingError("revision is the shipped config's placeholder (40 zeros): the platform "
                           "team fills in the commit it staged (`s2dit teacher stage` prints it)")
    if record.revision != revision:
        raise StagingError(f"{redact_url(url)} holds revision {record.revision} of {record.source}, "
                           f"the config pins {revision}: stage that revision (to its own URL) or "
                           "pin the staged one")


def node_cache() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def _lock(digest: str):
    from filelock import FileLock

    root = node_cache()
    root.mkdir(parents=True, exist_ok=True)
    return FileLock(str(root / f"{digest}.lock"))


def local_folder(store: Store, digest: str) -> Path:
    return Path(store.root) if store.is_local else node_cache() / digest[:32]


def materialize(url: str, *, revision: str | None) -> StagedCopy:
    """The staged copy at ``url`` as a verified local folder, checked once per node."""
    store, record, digest = read_record(url)
    check_revision(record, revision, url)
    folder = local_folder(store, digest)
    marker = node_cache() / f"{digest}.verified"
    with _lock(digest):  # the node's other actors wait here, then find the marker
        if not _marker_holds(marker, digest, folder, record):
            started = time.perf_counter()
            _verify_copy(store, record, folder, record.files)
            marker.write_text(json.dumps({"digest": digest, "folder": str(folder),
                                          "url": redact_url(store.url), "files": len(record.files),
                                          "bytes": record.total_bytes,
                                          "seconds": round(time.perf_counter() - started, 3)}))
    return StagedCopy(url=store.url, record=record, digest=digest, folder=folder)


def small_files(url: str, *, revision: str | None, is_weight: Callable[[str], bool]) -> StagedCopy:
    """The driver's view: only the files that are not weights (configs, tokenizer), fetched
    into the node-local folder and checked against the digest file."""
    store, record, digest = read_record(url)
    check_revision(record, revision, url)
    folder = local_folder(store, digest)
    wanted = {rel: f for rel, f in record.files.items() if not is_weight(rel)}
    with _lock(digest):
        _verify_copy(store, record, folder, wanted)
    return StagedCopy(url=store.url, record=record, digest=digest, folder=folder)


def _marker_holds(marker: Path, digest: str, folder: Path, record: StageRecord) -> bool:
    try:
        seen = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if seen.get("digest") != digest or seen.get("folder") != str(folder):
        return False
    # a node-local copy whose files were cleaned away since is fetched again (stat only)
    return all((folder / rel).is_file() and (folder / rel).stat().st_size == f.size
               for rel, f in record.files.items())


def _verify_copy(store: Store, record: StageRecord, folder: Path,
                 files: dict[str, StagedFile]) -> None:
    """Every file of ``files`` in ``folder`` with its recorded bytes: a shared folder is hashed
    in place; an object-store copy is downloaded (a local file already right is kept)."""
    bad = []
    for rel, want in sorted(files.items()):
        local = folder / rel
        if store.is_local:
            have = hash_file(local) if local.is_file() else None
        elif local.is_file() and local.stat().st_size == want.size and hash_file(local) == want:
            have = want
        else:
            have = _download(store, rel, local, want)
        if have != want:
            got = "missing" if have is None else f"sha256 {have.sha256[:12]}, {have.size} bytes"
            bad.append(f"{rel} ({got}; digest file: {want.sha256[:12]}, {want.size} bytes)")
    if bad:
        raise StagingError(f"the staged copy at {redact_url(store.url)} does not match its digest "
                           f"file: {'; '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}. Refusing "
                           "to load it: stage the checkpoint again to a new URL")


def _download(store: Store, rel: str, local: Path, want: StagedFile) -> StagedFile | None:
    """Download ``rel`` hashing as it arrives; it replaces ``local`` only if it matches."""
    local.parent.mkdir(parents=True, exist_ok=True)
    part = local.with_name(f".{local.name}.{uuid.uuid4().hex}.part")
    h, size = hashlib.sha256(), 0
    try:
        with store.fs.open(store.path(rel), "rb") as src, open(part, "wb") as dst:
            while block := src.read(CHUNK):
                h.update(block)
                dst.write(block)
                size += len(block)
    except FileNotFoundError:
        part.unlink(missing_ok=True)
        return None
    have = StagedFile(h.hexdigest(), size)
    if have == want:
        os.replace(part, local)
    else:
        part.unlink()
    return have


def describe(result: StageResult) -> Iterable[str]:
    """The lines ``s2dit teacher stage`` prints: what happened, then what to put in a config."""
    rec = result.record
    gb = rec.total_bytes / 1e9
    if result.noop:
        yield f"already staged: {result.url} holds the same {count(len(rec.files), 'file')} ({gb:.2f} GB); nothing copied"
    else:
        yield (f"staged {count(len(rec.files), 'file')} ({gb:.2f} GB; {result.copied} copied, "
               f"{result.kept} already there) to {result.url}")
    yield f"digest file: {result.url}/{DIGEST_FILE} (sha256 {result.digest})"
    yield "in the job config's [job.teacher]:"
    yield f'  staged = "{result.url}"'
    yield f'  revision = "{rec.revision}"' if rec.revision else \
        "  (no revision recorded: a job loads staged weights only at a pinned commit; stage again with --revision SHA)"
