"""Stage tag: name the verified generation (default ``train``): training reads CACHE@TAG, so
later appends or filters cannot change what it trained on."""

from __future__ import annotations

from typing import Any

from cache_schema.versioning import list_tags, set_tag

from ..config import RunConfig, refuse_unknown_keys
from ..registry import register_graph_stage
from ..stage import Stage, StageContext
from ..state_schema import INT, REF, STR

KEYS = ("name",)


def _name(config: RunConfig) -> str:
    section = config.section("tag")
    refuse_unknown_keys("tag", section, KEYS)
    return section.get("name", "train")


def run(ctx: StageContext) -> dict[str, Any]:
    cache, name = ctx.outputs("generate"), _name(ctx.config)
    set_tag(cache["cache"], name, cache["generation"])
    ctx.console.print(f"tag {name} -> generation {cache['generation']}; training reads "
                      f"{cache['cache']}@{name}")
    return {"cache_url": f"{cache['cache']}@{name}", "tag": name, "generation": cache["generation"]}


def _present(ctx: StageContext, outputs: dict[str, Any]) -> bool:
    cache = ctx.outputs("generate")
    return bool(cache) and list_tags(cache["cache"]).get(outputs["tag"]) == outputs["generation"]


STAGE = Stage(name="tag", title="tag the verified generation", section="tag", run=run,
              needs=("generate", "verify"), still_there=_present, check=_name,
              recorded={"cache_url": REF, "tag": STR, "generation": INT})
register_graph_stage(STAGE, order=40)
