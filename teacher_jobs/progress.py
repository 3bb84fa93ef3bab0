"""Per-sample progress from teacher actors to the driver, while a unit is still running.

A unit can take hours on a GPU; its result arrives only at its end. Actors post "unit attempt
K has N samples done" to a small board actor (fire and forget, so a slow driver never slows a
teacher); the driver takes the changes each time its main wait wakes up, shows them on the
progress bar and counts them as activity for the stall timeout. The board also exports the
job's Ray metrics (monitor.py): the driver posts its numbers, the board records them.
"""

from __future__ import annotations

from typing import Any


class ProgressBoard:
    """The latest count per key since the driver last took them (``ray.remote`` in job.py);
    with ``output``, the job's Ray metrics too."""

    def __init__(self, output: str | None = None) -> None:
        self._changed: dict[str, int] = {}
        self._metrics = None
        if output is not None:
            from .monitor import JobMetrics

            self._metrics = JobMetrics(output)

    def report(self, key: str, done: int) -> None:
        self._changed[key] = done

    def take(self) -> dict[str, int]:
        changed, self._changed = self._changed, {}
        return changed

    def publish(self, snapshot: dict[str, Any]) -> None:
        """The driver's numbers (JobMonitor.snapshot), recorded as Ray metrics."""
        if self._metrics is not None:
            self._metrics.record(snapshot)

    def published(self) -> dict[str, Any]:
        """The last snapshot recorded (what the metrics hold now)."""
        return self._metrics.last if self._metrics is not None else {}


class ProgressView:
    """The driver's side: samples of finished units plus the partial counts of running ones."""

    def __init__(self, ray, board: Any, bar: Any):
        self.ray, self.board, self.bar = ray, board, bar
        self.finished = bar.n
        self.partial: dict[str, int] = {}

    def poll(self, running: set[str], timeout: float = 10.0) -> set[str]:
        """Take the board's changes (keys of running attempts only: a dead actor's late
        report for a retried attempt is dropped); the keys that reported a sample."""
        try:
            changed = self.ray.get(self.board.take.remote(), timeout=timeout)
        except self.ray.exceptions.GetTimeoutError:
            return set()
        news = set()
        for key, done in changed.items():
            if key in running and done > self.partial.get(key, 0):
                self.partial[key] = done
                news.add(key)
        self._show()
        return news

    @property
    def shown(self) -> int:
        """Samples finished, with those of running units."""
        return self.finished + sum(self.partial.values())

    def unit_done(self, key: str, samples: int) -> None:
        self.partial.pop(key, None)
        self.finished += samples
        self._show()

    def drop(self, key: str) -> None:
        """A failed attempt: its partial samples will be redone."""
        self.partial.pop(key, None)
        self._show()

    def _show(self) -> None:
        shown = self.shown
        if shown != self.bar.n:
            self.bar.n = shown
            self.bar.refresh()
