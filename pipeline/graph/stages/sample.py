"""Stage sample: text to video through `s2dit sample`'s code (the deployed path), with
S2DiT-AR chunk by chunk when stage 2 ran, else S2DiT-KD: RUN_DIR/preview/preview.{json,npy,
N.mp4} (and .png for the analytic teacher), decoded by the cache's own teacher side.

Reads ``[sample]``: prompts (default: the corpus's first ``count``, 4), and SampleConfig keys
(seed, steps, full_step, streaming, chunk_frames, video, fps, device, dtype, teacher_source)."""

from __future__ import annotations

import dataclasses
from typing import Any

from pipeline.text_to_video import SampleConfig, generate

from ..config import RunConfig
from ..registry import register_graph_stage
from ..stage import Stage, StageContext
from ..state_schema import PATH, PATHS, STR, STRS, optional

OWN_KEYS = {"prompts", "count"}
GRAPH_KEYS = {"checkpoint", "out"}  # the run sets these
PREFIX = "preview/preview"


def _section(config: RunConfig) -> dict[str, Any]:
    section = config.section("sample")
    known = {f.name for f in dataclasses.fields(SampleConfig)} - GRAPH_KEYS | OWN_KEYS
    unknown = sorted(set(section) - known)
    if unknown:
        raise ValueError(f"unknown [sample] keys {unknown}; known: {sorted(known)}")
    return section


def run(ctx: StageContext) -> dict[str, Any]:
    section = _section(ctx.config)
    count = section.pop("count", 4)
    prompts = section.pop("prompts", None) or ctx.outputs("corpus")["sample_prompts"][:count]
    trained = ctx.outputs("train_ar") or ctx.outputs("train_kd")
    record = generate(SampleConfig(checkpoint=trained["checkpoint"], prompts=list(prompts),
                                   out=ctx.path(PREFIX), **section))
    ctx.console.print(f"{len(prompts)} prompts -> {', '.join(record['outputs']['videos'])}"
                      + (f"; scores {record['scores']}" if record.get("scores") else ""))
    return {"sidecar": record["outputs"]["sidecar"], "outputs": record["outputs"],
            "prompts": record["prompts"], "stage": record["stage"], "checkpoint": record["checkpoint"]}


STAGE = Stage(name="sample", title="text to video (the deployed path)", section="sample", run=run,
              seeded=True, artefact="preview/preview.json",
              needs=("train_kd", "corpus"), uses=("train_ar",), writes=("preview",),
              check=_section, recorded={"sidecar": PATH, "outputs": optional(PATHS),
                                        "prompts": optional(STRS), "stage": optional(STR),
                                        "checkpoint": optional(PATH)})
register_graph_stage(STAGE, order=90)
