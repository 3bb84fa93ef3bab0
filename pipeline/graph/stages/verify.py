"""Stage verify: the generated cache generation checked end to end (deep: every checksum)."""

from __future__ import annotations

import json
from typing import Any

import fsspec

from cache_schema import verify_cache
from cache_schema.words import count

from ..config import RunConfig, refuse_unknown_keys
from ..registry import register_graph_stage
from ..stage import Stage, StageContext
from ..state_schema import PATH

KEYS = ("deep",)


def _section(config: RunConfig) -> dict[str, Any]:
    section = config.section("verify")
    refuse_unknown_keys("verify", section, KEYS)
    return section


def run(ctx: StageContext) -> dict[str, Any]:
    section = _section(ctx.config)
    cache = ctx.outputs("generate")
    deep = bool(section.get("deep", True))
    report = verify_cache(f"{cache['cache']}@{cache['generation']}", deep=deep)
    record = {**report.to_json(), "deep": deep}
    with fsspec.open(ctx.path("verify.json"), "w") as handle:
        json.dump(record, handle, indent=1)
    if not report.ok:
        raise RuntimeError(f"cache failed verification ({ctx.path('verify.json')}): {report.problems[:3]}")
    ctx.console.print(f"intact: {count(report.checked_shards, 'shard')}, {count(report.checked_samples, 'sample')}"
                      f"{' checksummed' if deep else ''}")
    return {"verify": ctx.path("verify.json"), "checked_shards": report.checked_shards,
            "checked_samples": report.checked_samples}


STAGE = Stage(name="verify", title="verify the cache", section="verify", run=run,
              artefact="verify.json",
              needs=("generate",), writes=("verify.json",), check=_section,
              recorded={"verify": PATH})
register_graph_stage(STAGE, order=30)
