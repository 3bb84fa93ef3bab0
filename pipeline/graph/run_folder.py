"""Which folders ``s2dit run --out`` may write into, decided before anything is written.

A run folder is one of:

- a folder that does not exist yet, or an empty one (the run creates it), or one holding only
  a run's lock (``run_lock.LOCK_FILE``: a run killed right after it took the lock);
- a folder holding ``run_state.json`` as ``s2dit run`` writes it: a JSON object (at most
  ``MAX_STATE_BYTES``) with a ``run_version`` and a ``stages`` object. A fresh run writes this
  file before anything else (``runner.run_graph``), so a run killed at any point leaves a
  folder that is still a run folder.

Anything else is someone's folder and is refused untouched, as are the filesystem root, the
user's home directory and a bucket's root: one ``RunFolderRefused`` (a ValueError, so the CLI
prints one ``error:`` line and exits 2).
"""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .run_lock import LOCK_FILE
from .state import MAX_STATE_BYTES, STATE_FILE

_BUCKETED = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss"}


class RunFolderRefused(ValueError, FileExistsError):
    """``--out`` names a folder that is not a run folder; nothing was written."""


def _is_root(fs: fsspec.AbstractFileSystem, root: str) -> str | None:
    """Why ``root`` may not be a run folder, or None."""
    if isinstance(fs, LocalFileSystem):
        path = Path(root).resolve()
        if path == Path(path.anchor):
            return "the filesystem root"
        if path == Path.home().resolve():
            return "your home directory"
        return None
    bare = root.strip("/")
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if not bare or (protocols & _BUCKETED and "/" not in bare):
        return "the root of its store (a bucket or filesystem root)"
    return None


def _state_problem(fs: fsspec.AbstractFileSystem, path: str) -> str | None:
    """Why the run_state.json at ``path`` is not one that s2dit run wrote, or None."""
    try:
        if fs.size(path) > MAX_STATE_BYTES:
            return f"larger than {MAX_STATE_BYTES >> 20} MiB"
        data = json.loads(fs.cat_file(path))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        return f"not valid JSON: {exc}"
    except IsADirectoryError:
        return "a folder"
    if not isinstance(data, dict) or "run_version" not in data or not isinstance(data.get("stages"), dict):
        return "not an object with run_version and stages"
    return None


def check_run_folder(run_dir: str) -> None:
    """Refuse ``run_dir`` unless it is a run folder (module docstring); reads, never writes."""
    fs, root = fsspec.core.url_to_fs(run_dir)
    root = root.rstrip("/") or "/"
    if why := _is_root(fs, root):
        raise RunFolderRefused(f"--out {run_dir} is {why}; s2dit run writes a folder of files "
                               "there: give a folder of its own, e.g. runs/NAME")
    if not fs.exists(root):
        return
    if not fs.isdir(root):
        raise RunFolderRefused(f"--out {run_dir} is a file, not a folder; give a new or empty "
                               "folder, or an existing run folder")
    entries = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))
    # a run's lock alone: a run that was killed right after taking it (it writes nothing first)
    entries = [e for e in entries if e and e != LOCK_FILE]
    if not entries:
        return
    if STATE_FILE not in entries:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise RunFolderRefused(
            f"--out {run_dir} is not empty ({shown}) and is not a run folder (it has no "
            f"{STATE_FILE}, so s2dit run does not record writing any of it); nothing was "
            "written: give a new or empty folder, or the folder of an earlier run")
    if problem := _state_problem(fs, f"{root}/{STATE_FILE}"):
        raise RunFolderRefused(
            f"--out {run_dir} holds a {STATE_FILE} that s2dit run did not write ({problem}); "
            "nothing was written: move it away or give another --out")
