"""Stage sample: text to video through `s2dit sample`'s code (the deployed path), with the
student of the last training stage that finished (S2DiT-AR chunk by chunk when stage 2 ran,
else S2DiT-KD; sampled as its spec says): RUN_DIR/preview/preview.{json,npy,N.mp4} (and .png
for the analytic teacher), decoded by the cache's own teacher side.

Reads ``[sample]``: prompts (default: the corpus's first ``count``, 4), and SampleConfig keys
(seed, steps, full_step, streaming, chunk_frames, video, fps, device, dtype, teacher_source);
``ray = {num_gpus = 1, memory_gb = 96}`` runs it in a Ray task on such a node (remote.py)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from cache_schema.words import count
from pipeline.text_to_video import SampleConfig, generate

from ..config import RunConfig, refuse_unknown_keys
from ..registry import register_graph_builder
from ..stage import Stage, StageContext
from ..state_schema import PATH, PATHS, STR, STRS, optional
from .training import training_stages

OWN_KEYS = {"prompts", "count"}
GRAPH_KEYS = {"checkpoint", "out"}  # the run sets these
PREFIX = "preview/preview"


def _section(config: RunConfig) -> dict[str, Any]:
    section = config.section("sample")
    known = {f.name for f in dataclasses.fields(SampleConfig)} - GRAPH_KEYS | OWN_KEYS
    refuse_unknown_keys("sample", section, known)
    return section


def _trained(ctx: StageContext, students: tuple[str, ...]) -> dict[str, Any]:
    """The outputs of the last of the training stages ``students`` that finished ({}: none)."""
    for name in reversed(students):
        outputs = ctx.outputs(name)
        if outputs:
            return outputs
    return {}


def run(ctx: StageContext, students: tuple[str, ...]) -> dict[str, Any]:
    section = _section(ctx.config)
    first = section.pop("count", 4)
    prompts = section.pop("prompts", None) or ctx.outputs("corpus")["sample_prompts"][:first]
    trained = _trained(ctx, students)
    if not trained:  # --only sample before any training stage finished
        raise ValueError(f"no trained student to sample: none of {', '.join(students)} has "
                         "finished; run them first")
    record = generate(SampleConfig(checkpoint=trained["checkpoint"], prompts=list(prompts),
                                   out=ctx.path(PREFIX), **section))
    ctx.console.print(f"{count(len(prompts), 'prompt')} -> {', '.join(record['outputs']['videos'])}"
                      + (f"; scores {record['scores']}" if record.get("scores") else ""))
    return {"sidecar": record["outputs"]["sidecar"], "outputs": record["outputs"],
            "prompts": record["prompts"], "stage": record["stage"], "checkpoint": record["checkpoint"]}


def stage(before: tuple[Stage, ...]) -> Stage:
    """The sample stage, reading every training stage placed ``before`` it."""
    students = tuple(s.name for s in training_stages(before))

    def untrained(ctx: StageContext) -> str | None:
        # by status, not outputs: --plan marks the training stages that would run as done
        if not students:
            return "no training stage is registered"
        if all(ctx.state.get(name)["status"] == "skipped" for name in students):
            return f"every training stage was skipped ({', '.join(students)})"
        return None

    return Stage(name="sample", title="text to video (the deployed path)", section="sample",
                 run=functools.partial(run, students=students), seeded=True,
                 artefact="preview/preview.json", needs=("corpus",), uses=students,
                 writes=("preview",), check=_section, skip_reason=untrained,
                 ray_task=True, paths=("teacher_source",),
                 recorded={"sidecar": PATH, "outputs": optional(PATHS), "prompts": optional(STRS),
                           "stage": optional(STR), "checkpoint": optional(PATH)})


register_graph_builder("sample", stage, order=90, title="text to video (the deployed path)")
