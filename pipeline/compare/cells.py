"""The grid's cells, one after another in this process or side by side as Ray tasks.

    [compare]
    max_parallel = 2                      # cells at once (default 1)
    ray = {num_cpus = 1, memory_gb = 4}   # each cell's task (a section ``ray`` table)

With neither (``max_parallel = 1``, no table) every cell is brought up to date here, in order,
as it always was. Otherwise each cell's training, scoring and videos (grid.run_cell) run in one
Ray task with the table's resources (1 CPU without a table), at most ``max_parallel`` at once,
on the Ray cluster the training stages use (student_train.distributed.connect_ray).

INPUT: the Grid, its local paths made absolute (a task's working folder is not the driver's);
each cell's record, prepared in the driver (a cell trained under another recipe is removed
there); the storage settings by name only (``storage_env``: the profile, never a credential).
OUTPUT: every cell's record, in the grid's order. A task writes only its cell's folder and
record, atomically as in process, and returns the record and the lines it logged; the driver
shows which cells run and how many are done. The cost is measured afterwards, by run_grid in
the driver alone, so that the latencies compared are taken in one process under one load.
A cell that borrows a stage from another (sharing.py: a stage-2 ablation's S2DiT-KD is s2dit's)
starts only when that cell is done.

Failures count as in process: an error raised in a cell ends the grid and comes back as
itself (after the cells already running finish; no new one starts); a cell whose process or
node dies is run again, resuming from its newest checkpoint, up to ``[run] max_failures`` times
(the task's retries, as Ray Train restarts a worker group). An interrupted grid continues where
it stopped: a finished cell is not sent again, a cell cut short resumes its training.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from cache_schema.store import absolute_url, apply_storage_env, storage_env

from .config import CompareConfig
from .grid import Grid, cell_pending, prepare_cell, run_cell
from .progress import transient_progress
from .sharing import waits_for

if TYPE_CHECKING:
    from pipeline.graph.config import TaskResources

Cell = tuple[str, int]  # (variant, seed)
GB = 10**9


def placement(compare: CompareConfig) -> TaskResources | None:
    """The resources of each cell's Ray task; None: the cells run in this process."""
    # here, not at the top: pipeline.graph imports this package (its compare stage)
    from pipeline.graph.config import TaskResources

    if compare.ray is not None:
        return TaskResources.parse(CompareConfig.TABLE, compare.ray)
    return TaskResources() if compare.max_parallel > 1 else None


def run_cells(grid: Grid) -> list[dict[str, Any]]:
    """Every cell of ``grid`` brought up to date; their records in ``grid.cells()`` order."""
    resources = placement(grid.compare)
    if resources is None:
        return [run_cell(grid, prepare_cell(grid, variant, seed)) for variant, seed in grid.cells()]
    return _run_as_tasks(grid, resources)


def _name(cell: Cell) -> str:
    return f"{cell[0]} seed {cell[1]}"


def _in_task(grid: Grid, record: dict[str, Any], env: dict[str, str]
             ) -> tuple[dict[str, Any], list[str]]:
    """A task's body: the driver's storage settings, then the cell, its log kept for the driver."""
    apply_storage_env(env)
    lines: list[str] = []
    record = run_cell(dataclasses.replace(grid, log=lines.append), record)
    return record, lines


def _for_tasks(grid: Grid) -> Grid:
    """``grid`` as a task can use it: local paths absolute, no console (what it logs comes
    back as lines), no trainer progress bars (the driver shows the cells')."""
    return dataclasses.replace(grid, out=absolute_url(grid.out), cache_url=absolute_url(grid.cache_url),
                               log=print, progress=False)


def _run_as_tasks(grid: Grid, resources: TaskResources) -> list[dict[str, Any]]:
    from pipeline.graph.remote import check_fits
    from student_train.distributed import connect_ray

    ray = connect_ray()
    check_fits(ray, CompareConfig.TABLE, resources)
    shown, log = grid, grid.log
    grid = _for_tasks(grid)
    cells = grid.cells()
    records = {cell: prepare_cell(dataclasses.replace(grid, log=log), *cell) for cell in cells}
    waiting = [cell for cell in cells if cell_pending(grid, records[cell])]
    options: dict[str, Any] = {"num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus,
                               "max_retries": grid.max_failures, "retry_exceptions": False}
    if resources.memory_gb:
        options["memory"] = int(resources.memory_gb * GB)
    task, env, at_once = ray.remote(_in_task).options(**options), storage_env(), grid.compare.max_parallel
    log(f"{len(waiting)} of {len(cells)} cells to bring up to date, up to {at_once} at once as Ray "
        f"tasks ({resources.describe()})")
    running: dict[Any, tuple[Cell, float]] = {}
    failed: BaseException | None = None
    done = len(cells) - len(waiting)
    with _board(shown.progress, len(cells)) as show:
        try:
            while running or (waiting and failed is None):
                while waiting and failed is None and len(running) < at_once:
                    cell = _next_ready(grid, waiting, [c for c, _ in running.values()])
                    if cell is None:  # each waits for a running cell's stage (sharing.py)
                        break
                    waiting.remove(cell)
                    running[task.remote(grid, records[cell], env)] = (cell, time.perf_counter())
                    log(f"{_name(cell)}: started")
                show(done, [_name(c) for c, _ in running.values()])
                (ref,), _ = ray.wait(list(running), num_returns=1)
                cell, t0 = running.pop(ref)
                try:
                    records[cell], lines = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    failed = failed or _cause(exc, cell)
                    log(f"{_name(cell)}: failed ({type(failed).__name__}: {failed}); "
                        f"{'no new cell starts' if waiting else 'no cell is left to start'}"
                        f"{f', waiting for {len(running)} running' if running else ''}")
                    continue
                for line in lines:
                    log(line)
                done += 1
                log(f"{_name(cell)}: done in {(time.perf_counter() - t0) / 60:.1f} min "
                    f"({done} of {len(cells)} cells)")
            show(done, [])
        except KeyboardInterrupt:  # the cells' tasks end with the driver; their checkpoints stay
            for ref in running:
                ray.cancel(ref)
            raise
    if failed is not None:
        raise failed
    return [records[cell] for cell in cells]


def _next_ready(grid: Grid, waiting: list[Cell], running: list[Cell]) -> Cell | None:
    """The first waiting cell none of whose owners (the cells it borrows a stage from) is still
    waiting or running; None when every waiting cell waits for one."""
    busy = set(waiting) | set(running)
    return next((cell for cell in waiting if not waits_for(grid, *cell) & busy), None)


def _cause(exc: BaseException, cell: Cell) -> BaseException:
    """The cell's own error, as in process; a task that ended without one (its process or node
    died more than ``max_failures`` times, or it was cancelled) as a RuntimeError."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return cause
    first = (str(exc).strip().splitlines() or [""])[0]
    return RuntimeError(f"{_name(cell)}'s Ray task ended without a result ({type(exc).__name__}: "
                        f"{first}); its checkpoints are kept: rerun the same command to resume it")


@contextmanager
def _board(progress: bool, total: int) -> Iterator[Callable[[int, list[str]], None]]:
    """A progress line on stderr while cells run (a terminal only; gone when they end): cells
    done of all, the ones running. Yields ``show(done, running)``."""
    with transient_progress(progress) as bar:
        task = bar.add_task("cells", total=total)

        def show(done: int, running: list[str]) -> None:
            what = f"cells running: {', '.join(running)}" if running else "cells"
            bar.update(task, completed=done, description=escape(what))

        yield show
