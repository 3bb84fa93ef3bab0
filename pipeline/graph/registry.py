"""The run graph's stages, each registered by its own module: the one stage list.

A stage module (pipeline/graph/stages/, a plug-in's or a test's) builds its ``Stage`` (name,
config section and its check, fingerprint inputs, outputs) and places it with one call::

    STAGE = register_graph_stage(Stage(name="train_x", section="train_x", ...), order=75)

The graph runs the registered stages by ``order`` and closes with the report, which reads them
all (``stages.graph_stages``). Every stage a stage reads must have a smaller ``order``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cache_schema.registry import Registry

from .stage import Stage


@dataclass(frozen=True, slots=True)
class Placed:
    stage: Stage
    order: int  # its place in the graph (smaller runs first)


GRAPH_STAGES: Registry[Placed] = Registry(
    "run-graph stage", what="--from/--only and run_state.json",
    hint="a stage module registers itself with pipeline.graph.registry.register_graph_stage",
    describe=lambda placed: f"{placed.stage.title}, order {placed.order}")


def register_graph_stage(stage: Stage, *, order: int, replace: bool = False) -> Stage:
    """Add ``stage`` to the run graph at ``order``; returns it. Two stages at one order would
    run in registration order, which no module controls: refused."""
    if not isinstance(stage, Stage):
        raise TypeError(f"register_graph_stage takes a Stage, got {stage!r}")
    if not isinstance(order, int) or isinstance(order, bool):
        raise TypeError(f"run-graph stage {stage.name!r}: order must be an int, got {order!r}")
    taken = [p.stage.name for p in GRAPH_STAGES.values()
             if p.order == order and p.stage.name != stage.name]
    if taken:
        raise ValueError(f"run-graph stage {stage.name!r}: order {order} is {taken[0]!r}'s; "
                         "choose a free order between the stages it runs between")
    GRAPH_STAGES.register(stage.name, Placed(stage, order), replace=replace)
    return stage


def unregister_graph_stage(name: str) -> None:
    """Remove a registered stage (a plug-in or a test cleaning up)."""
    GRAPH_STAGES.unregister(name)


def registered_stages() -> tuple[Stage, ...]:
    """The registered stages by order, each after every stage it reads (else ValueError)."""
    placed = sorted(GRAPH_STAGES.values(), key=lambda p: p.order)
    before: set[str] = set()
    for p in placed:
        late = [u for u in p.stage.upstream if u not in before]
        if late:
            raise ValueError(f"run-graph stage {p.stage.name!r} (order {p.order}) reads {late}, "
                             "which are not registered before it: give it a larger order, or "
                             "register those stages first")
        before.add(p.stage.name)
    return tuple(p.stage for p in placed)
