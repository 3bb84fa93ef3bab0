"""Output meant for people: rich tables that fit the terminal (rich's Console: the terminal's
width, else $COLUMNS, else 80), sizes in human units, counted nouns, short times. Each command
that prints one also takes ``--json``, the same rows for machines (raw numbers, ISO times)."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.filesize import decimal
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from cache_schema.words import count

__all__ = ["count", "duration", "fixed", "key_values", "size", "table", "when", "working", "wrapping"]


def table(title: str | None, columns: list[Column], *, caption: str | None = None) -> Table:
    """A compact table of ``columns`` (``fixed`` and ``wrapping`` ones), title and caption
    left-aligned (plain text, not rich markup), no box: two spaces between columns."""
    return Table(*columns, title=title and escape(title), caption=caption and escape(caption),
                 box=None, pad_edge=False, header_style="bold", title_style="bold",
                 title_justify="left", caption_justify="left")


def key_values(title: str | None, rows: list[tuple[str, str]]) -> Table:
    """A two-column table without a header: a name, then its value (wrapping), both plain text
    (a value quoting ``[job]`` stays as written)."""
    grid = table(title, [fixed("what"), wrapping("value", 20)])
    grid.show_header = False
    for name, value in rows:
        grid.add_row(escape(name), escape(value))
    return grid


def fixed(header: str, *, right: bool = False) -> Column:
    """A column whose cells keep to one line (numbers, names, short codes)."""
    return Column(header, justify="right" if right else "left", no_wrap=True)


def wrapping(header: str, min_width: int | None = None) -> Column:
    """A column that wraps (then folds) its cells when the terminal is narrow; never narrower
    than ``min_width`` (default its header)."""
    return Column(header, overflow="fold", min_width=min_width or len(header))


def size(n: int) -> str:
    """Bytes in human units (``1.2 MB``)."""
    return decimal(n)


def when(moment: datetime.datetime | float) -> str:
    """A time (or a Unix timestamp, local time) to the minute: ``2026-12-06 16:33``."""
    if not isinstance(moment, datetime.datetime):
        moment = datetime.datetime.fromtimestamp(moment)
    return moment.strftime("%Y-%m-%d %H:%M")


def duration(seconds: float) -> str:
    """A span for people: ``42.1 s``, ``3 min 20 s``, ``2 h 5 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


Step = Callable[[int, int, str], None]  # (parts done, parts in all (0: unknown), what now)


@contextmanager
def working(what: str) -> Iterator[Step]:
    """A progress line on stderr while a command works (a terminal only; gone when it ends):
    spinner, ``what``, the part it is at, a bar once the parts are counted, time elapsed.
    Yields ``step(done, total, part)``."""
    console = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TimeElapsedColumn(), console=console, transient=True,
                  disable=not console.is_terminal) as bar:
        task = bar.add_task(escape(what), total=None)

        def step(done: int, total: int, part: str) -> None:
            bar.update(task, completed=done, total=total or None,
                       description=escape(f"{what}: {part}"))

        yield step
