"""The run report: one HTML page of what a run (RUN_LAYOUT) produced, and the cache card.

``write_report(run_dir)`` is what the ``report`` stage and `s2dit report` call;
``cache_card`` is the section `s2dit cache report` writes alone.
"""

from .cache_card import cache_card
from .page import write_report

__all__ = ["cache_card", "write_report"]
