"""The run's training stages as the report shows them, read from the run graph's registry: a
stage registered later (a plug-in, a test) gets its curves, videos and scores without an edit
here, and no stage is named."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.graph.stages import STAGES
from pipeline.graph.stages.evaluate import scorer
from pipeline.graph.stages.training import training_stages
from student_train.stages import get_stage


@dataclass(frozen=True, slots=True)
class Trained:
    stage: str  # its graph stage, "train_kd"
    title: str  # its graph stage's line, "train S2DiT-KD (stage 1)"
    model: str  # the model it trains, "S2DiT-KD"
    folder: str  # its run-folder path, "student"
    streams: bool  # its finished checkpoint samples chunk by chunk (S2DiT-AR)
    scored_by: str = ""  # the stage that scores it, "eval_kd" ("": none)
    scores: str = ""  # the file that stage writes, "eval_kd.json"


def trained_stages() -> tuple[Trained, ...]:
    """The registered training stages in graph order, each with the stage that scores it."""
    stages = tuple(STAGES)
    out = []
    for stage in training_stages(stages):
        spec = get_stage(stage.trains)
        scored = scorer(stages, stage.name)
        out.append(Trained(stage=stage.name, title=stage.title, model=spec.title,
                           folder=stage.writes[0], streams=spec.finished_streams,
                           scored_by=scored.name if scored else "",
                           scores=scored.artefact if scored else ""))
    return tuple(out)


def scored_stages() -> tuple[Trained, ...]:
    """Of ``trained_stages()``, those a stage scores, in order."""
    return tuple(t for t in trained_stages() if t.scored_by)
