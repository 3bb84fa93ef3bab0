"""run_state.json: what each stage of a run folder last did (RUN_LAYOUT in the drafts/README).

One record per stage: status (pending | running | done | failed | skipped), the fingerprint of
its inputs and the inputs themselves, its outputs, start/finish times and seconds; ``failed``
carries ``error``, ``skipped`` carries ``reason``. The file is rewritten atomically after every
change, so a killed run leaves the last consistent state (a stage shown ``running``)."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any

import fsspec

from pipeline.video_io import atomic_output

RUN_VERSION = 1
STATE_FILE = "run_state.json"
STATUSES = ("pending", "running", "done", "failed", "skipped")


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
    def load(cls, run_dir: str, stage_names: tuple[str, ...]) -> RunState:
        url = f"{run_dir.rstrip('/')}/{STATE_FILE}"
        fs, path = fsspec.core.url_to_fs(url)
        stages: dict[str, dict[str, Any]] = {}
        partial: list[str] = []
        if fs.exists(path):
            with fs.open(path, "r") as handle:
                try:
                    data = json.load(handle)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{url} is not valid JSON ({exc}); it is written atomically, "
                                     "so something else wrote it: move it away to start over") from None
            if data.get("run_version") != RUN_VERSION:
                raise ValueError(f"{url} has run_version {data.get('run_version')!r}; this s2dit "
                                 f"writes {RUN_VERSION}: use a new --out")
            stages = data["stages"]
            partial = data.get("partial", [])
            if not isinstance(partial, list) or not all(isinstance(p, str) for p in partial):
                raise ValueError(f"{url}: 'partial' must be a list of names; move the file away "
                                 "to start over")
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
            body = {"run_version": RUN_VERSION, "stages": self.stages}
            if self.partial:
                body["partial"] = sorted(set(self.partial))
            json.dump(body, handle, indent=1)
