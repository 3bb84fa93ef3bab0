"""The stages of `s2dit run`, one module each, found here and registered by themselves
(pipeline/graph/registry.py): a new stage is its file and one ``register_graph_stage`` call;
a new training stage one ``register_training_stage`` call (training.py), its graph stage derived.

Everything that lists stages derives from the registry: ``STAGES``, ``STAGE_NAMES`` and
``SECTIONS`` are views of it, read at each use, so a stage registered later (a plug-in, a
test) is in the run config's sections, the CLI's choices, --plan, the runner and the report's
stage table; `s2dit run --help` (pipeline/commands/run.py) takes ``stage_lines()``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar, overload

from ..registry import registered_stages
from ..stage import Stage
from . import report

for _module in pkgutil.iter_modules(__path__):  # each stage module registers its stages
    importlib.import_module(f"{__name__}.{_module.name}")

T = TypeVar("T")


def graph_stages() -> tuple[Stage, ...]:
    """The stages in order: the registered ones, then the report, which reads them all."""
    work = registered_stages()
    names = tuple(s.name for s in work)
    closing = report.stage(work)
    if closing.name in names:
        raise ValueError(f"a registered stage is called {closing.name!r}: that name is the "
                         "report's, which closes every graph; choose another")
    return (*work, closing)


def stage_names() -> tuple[str, ...]:
    return tuple(s.name for s in graph_stages())


def sections() -> tuple[str, ...]:
    """The run config's sections: [run], then each stage's in stage order (stages may share one)."""
    return ("run", *dict.fromkeys(s.section for s in graph_stages()))


def seeded_sections() -> frozenset[str]:
    """Sections whose ``seed`` defaults to ``[run] seed``."""
    return frozenset(s.section for s in graph_stages() if s.seeded)


class _View(Sequence[T]):
    """A tuple-like view read from the registry at each use (a snapshot would miss a stage
    registered after the import)."""

    __slots__ = ("_read",)

    def __init__(self, read: Callable[[], tuple[T, ...]]):
        self._read = read

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[T, ...]: ...

    def __getitem__(self, index):
        return self._read()[index]

    def __len__(self) -> int:
        return len(self._read())

    def __iter__(self) -> Iterator[T]:
        return iter(self._read())

    def __contains__(self, item: object) -> bool:
        return item in self._read()

    def __repr__(self) -> str:
        return repr(self._read())


STAGES: Sequence[Stage] = _View(graph_stages)
STAGE_NAMES: Sequence[str] = _View(stage_names)
SECTIONS: Sequence[str] = _View(sections)


def stage_lines() -> list[str]:
    """One line per stage: number, name, section, what it writes and what it is."""
    lines = []
    for i, s in enumerate(graph_stages(), 1):
        writes = f" -> {', '.join(s.writes)}" if s.writes else ""
        resumable = " (resumable)" if s.resumable else ""
        lines.append(f"{i:>2}. {s.name:<9} {f'[{s.section}]':<10} {s.title}{writes}{resumable}")
    return lines
