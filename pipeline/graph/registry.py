"""The run graph's stages, each registered by its own module: the one stage list.

A stage module (pipeline/graph/stages/, a plug-in's or a test's) builds its ``Stage`` (name,
config section and its check, fingerprint inputs, outputs) and places it with one call::

    STAGE = register_graph_stage(Stage(name="train_x", section="train_x", ...), order=75)

A stage that reads a kind of stage rather than named ones (sample reads every training stage,
a training stage the one trained before it) registers a builder instead, which makes it from the
stages placed before it each time the list is read, so a stage registered later is among them::

    register_graph_builder("sample", lambda before: Stage(..., uses=...), order=90)

The graph runs the registered stages by ``order`` and closes with the report, which reads them
all (``stages.graph_stages``). Every stage a stage reads must have a smaller ``order``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cache_schema.registry import Registry

from .stage import Stage

# The stage placed under a name, made from the stages placed before it (in order)
Build = Callable[[tuple[Stage, ...]], Stage]


@dataclass(frozen=True, slots=True)
class Placed:
    name: str
    order: int  # its place in the graph (smaller runs first)
    build: Build
    title: str  # for messages ("" for a builder that gave none)


GRAPH_STAGES: Registry[Placed] = Registry(
    "run-graph stage", what="--from/--only and run_state.json",
    hint="a stage module registers itself with pipeline.graph.registry.register_graph_stage",
    describe=lambda placed: f"{placed.title or placed.name}, order {placed.order}")


def register_graph_builder(name: str, build: Build, *, order: int, title: str = "",
                           replace: bool = False) -> None:
    """Place the stage ``build(stages before it)`` makes under ``name`` at ``order``. Two stages
    at one order would run in registration order, which no module controls: refused."""
    if not callable(build):
        raise TypeError(f"run-graph stage {name!r}: build must be callable, got {build!r}")
    if not isinstance(order, int) or isinstance(order, bool):
        raise TypeError(f"run-graph stage {name!r}: order must be an int, got {order!r}")
    taken = [p.name for p in GRAPH_STAGES.values() if p.order == order and p.name != name]
    if taken:
        raise ValueError(f"run-graph stage {name!r}: order {order} is {taken[0]!r}'s; "
                         "choose a free order between the stages it runs between")
    GRAPH_STAGES.register(name, Placed(name, order, build, title), replace=replace)


def register_graph_stage(stage: Stage, *, order: int, replace: bool = False) -> Stage:
    """Add ``stage`` to the run graph at ``order``; returns it."""
    if not isinstance(stage, Stage):
        raise TypeError(f"register_graph_stage takes a Stage, got {stage!r}")
    register_graph_builder(stage.name, lambda before: stage, order=order, title=stage.title,
                           replace=replace)
    return stage


def unregister_graph_stage(name: str) -> None:
    """Remove a registered stage (a plug-in or a test cleaning up)."""
    GRAPH_STAGES.unregister(name)


def registered_stages() -> tuple[Stage, ...]:
    """The registered stages by order, each after every stage it reads (else ValueError)."""
    built: list[Stage] = []
    for p in sorted(GRAPH_STAGES.values(), key=lambda p: p.order):
        stage = p.build(tuple(built))
        if not isinstance(stage, Stage) or stage.name != p.name:
            raise TypeError(f"run-graph stage {p.name!r}: its builder made {stage!r}, not a "
                            f"Stage named {p.name!r}")
        before = {s.name for s in built}
        late = [u for u in stage.upstream if u not in before]
        if late:
            raise ValueError(f"run-graph stage {p.name!r} (order {p.order}) reads {late}, "
                             "which are not registered before it: give it a larger order, or "
                             "register those stages first")
        built.append(stage)
    return tuple(built)
