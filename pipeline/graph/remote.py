"""A stage run as a Ray task, placed by the resources its section's ``ray`` table asks for.

On a cluster the driver of `s2dit run` is the head pod (no GPU, little memory); a stage that
runs models there (sample, the report's videos) would not fit. A stage that says
``Stage.ray_task`` may be sent elsewhere: ``[sample] ray = {num_gpus = 1, memory_gb = 96}``
runs its ``run`` in a Ray task on a node with those resources. Without the table it runs in
process, as before.

INPUT: the stage's ``run``, the run folder and config with local paths absolute (the task's
working folder is not the driver's), a snapshot of the run state, and the storage settings by
name only (``storage_env``: the profile, never a credential).
OUTPUT: the task writes the stage's files to the run folder itself, atomically as in process,
and returns the outputs to record and what it printed; the driver records them. An exception
raised by the stage comes back as itself (the usual one ``error:`` line).
"""

from __future__ import annotations

import copy
import dataclasses
import io
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.text import Text

from cache_schema.store import absolute_url, apply_storage_env, storage_env

from .config import RunConfig, TaskResources
from .stage import Stage, StageContext

Run = Callable[[StageContext], dict[str, Any]]
GB = 10**9


def run_stage(stage: Stage, ctx: StageContext) -> dict[str, Any]:
    """``stage.run(ctx)``: in this process, or in a Ray task when its section has a ``ray``
    table (only for a stage that says ``ray_task``: check_section refuses it elsewhere)."""
    resources = ctx.config.placement(stage.section) if stage.ray_task else None
    if resources is None:
        return stage.run(ctx)
    return run_as_task(stage, ctx, resources)


def task_config(config: RunConfig, section: str, paths: tuple[str, ...]) -> RunConfig:
    """A copy of ``config`` whose ``paths`` keys of ``section`` are absolute when local."""
    sections = copy.deepcopy(config.sections)
    own = sections.get(section, {})
    for key in paths:
        if isinstance(own.get(key), str):
            own[key] = absolute_url(own[key])
    return dataclasses.replace(config, sections=sections)


def _in_task(run: Run, fields: dict[str, Any], env: dict[str, str], width: int
             ) -> tuple[dict[str, Any], str]:
    """The task's body: the driver's storage settings, then the stage with a console that
    keeps what it prints for the driver."""
    apply_storage_env(env)
    printed = io.StringIO()
    console = Console(file=printed, width=width, force_terminal=False, no_color=True,
                      highlight=False)
    outputs = run(StageContext(console=console, progress=False, **fields))
    return outputs, printed.getvalue()


def _connect() -> Any:
    """Ray, connected as the training stages connect (student_train.distributed.connect_ray)."""
    from student_train.distributed import connect_ray

    return connect_ray()


def check_fits(ray: Any, section: str, resources: TaskResources) -> None:
    """Refuse at once (ValueError) when no live node has the resources: the task would wait
    for one forever (the shipped clusters do not autoscale)."""
    wanted = {"CPU": resources.num_cpus, "GPU": resources.num_gpus,
              "memory": resources.memory_gb * GB}
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(all(node.get(k, 0.0) >= v for k, v in wanted.items() if v) for node in nodes):
        return
    largest = max(nodes, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0)), default={})
    have = (f"{largest.get('CPU', 0.0):g} CPU, {largest.get('GPU', 0.0):g} GPU, "
            f"{largest.get('memory', 0.0) / GB:.0f} GB")
    raise ValueError(f"[{section}] ray asks for {resources.describe()}, but no node of this Ray "
                     f"cluster has that (the largest: {have}); lower it, add such a node, or "
                     f"remove [{section}] ray to run the stage in this process")


def run_as_task(stage: Stage, ctx: StageContext, resources: TaskResources) -> dict[str, Any]:
    """Run ``stage`` in a Ray task with ``resources``; its outputs, as ``stage.run`` returns."""
    ray = _connect()
    check_fits(ray, stage.section, resources)
    run_dir = absolute_url(ctx.run_dir)
    fields = {"run_dir": run_dir, "config": task_config(ctx.config, stage.section, stage.paths),
              "state": ctx.state, "recorded": ctx.recorded}
    options = {"num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus}
    if resources.memory_gb:
        options["memory"] = int(resources.memory_gb * GB)
    ctx.console.print(f"{stage.name}: in a Ray task ({resources.describe()})")
    ref = ray.remote(_in_task).options(**options).remote(stage.run, fields, storage_env(),
                                                         ctx.console.width)
    try:
        outputs, printed = ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):  # the stage's own error, as in process
            raise cause from exc
        raise
    except ray.exceptions.RayError as exc:  # the task's process or node died, or it was cancelled
        first = (str(exc).strip().splitlines() or [""])[0]
        raise RuntimeError(f"stage {stage.name}'s Ray task ended without a result "
                           f"({type(exc).__name__}: {first}); its outputs are written "
                           "atomically: rerun the same command") from exc
    except KeyboardInterrupt:
        ray.cancel(ref)
        raise
    if printed:
        ctx.console.print(Text(printed.rstrip("\n")))
    return outputs
