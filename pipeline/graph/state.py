"""run_state.json: what each stage of a run folder last did (RUN_LAYOUT in the drafts/README).

One record per stage: status (pending | running | done | failed | skipped), the fingerprint of
its inputs and the inputs themselves, its outputs, start/finish times and seconds; ``failed``
carries ``error``, ``skipped`` carries ``reason``. The file is rewritten atomically after every
change, so a killed run leaves the last consistent state (a stage shown ``running``)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import fsspec

from cache_schema.redact import redact_secrets
from pipeline.video_io import atomic_output

from .state_schema import STATUSES, RunStateError, short, validate_state

RUN_VERSION = 1
STATE_FILE = "run_state.json"
MAX_STATE_BYTES = 64 << 20  # far above any real run's; a bound on what a load reads


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


@dataclass(kw_only=True, slots=True)
class RunState:
    url: str  # the run_state.json URL
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Folder entries written outside any stage (the report of a failed run): a stage whose
    # ``writes`` name them replaces them instead of refusing them as someone else's files.
    partial: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, run_dir: str, stage_names: tuple[str, ...],
             recorded: Mapping[str, Mapping[str, str]] | None = None) -> RunState:
        """The state of ``run_dir`` (pending stages when it has none), checked against the
        schema (state_schema; ``recorded``: each stage's typed output keys): RunStateError."""
        url = f"{run_dir.rstrip('/')}/{STATE_FILE}"
        fs, path = fsspec.core.url_to_fs(url)
        stages: dict[str, dict[str, Any]] = {}
        partial: list[str] = []
        if fs.exists(path):
            if fs.isdir(path) or fs.size(path) > MAX_STATE_BYTES:
                raise RunStateError(f"{url} is a folder or larger than {MAX_STATE_BYTES >> 20} MiB; "
                                    "move it away and start over in a new --out")
            try:
                data = json.loads(fs.cat_file(path))
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                raise RunStateError(f"{url} is not valid JSON ({type(exc).__name__}); it is written "
                                    "atomically, so something else wrote it: move it away to "
                                    "start over") from None
            if not isinstance(data, dict) or data.get("run_version") != RUN_VERSION:
                version = data.get("run_version") if isinstance(data, dict) else None
                raise RunStateError(f"{url} has run_version {short(version)}; this s2dit writes "
                                    f"{RUN_VERSION}: use a new --out")
            validate_state(data, url, recorded or {})
            stages, partial = data["stages"], data.get("partial", [])
        for name in stage_names:
            stages.setdefault(name, {"status": "pending"})
        return cls(url=url, stages=stages, partial=partial)

    def get(self, name: str) -> dict[str, Any]:
        return self.stages[name]

    def set(self, name: str, record: dict[str, Any]) -> None:
        assert record["status"] in STATUSES, record
        self.stages[name] = record
        self.save()

    def save(self) -> None:
        with atomic_output(self.url) as path, open(path, "w") as handle:
            # inputs record the stage's config section, errors its message: no credential
            body = {"run_version": RUN_VERSION, "stages": redact_secrets(self.stages)}
            if self.partial:
                body["partial"] = sorted(set(self.partial))
            json.dump(body, handle, indent=1)
