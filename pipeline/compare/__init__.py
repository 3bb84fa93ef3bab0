"""Students side by side: a grid of [train.model] variants trained by both stages from one
cache over several training seeds, scored by the oracle, costed per streamed chunk, and drawn
as one page (the Pareto plot of quality against measured latency, and the table).

The run graph's ``compare`` stage (pipeline/graph/stages/compare.py) runs it from a run
config's ``[compare]`` section: config.py (the section), grid.py (train, score, cost, write),
summary.py and stats.py (over seeds, the Pareto front), page.py (the HTML).
"""

from .config import CompareConfig
from .grid import Grid, run_grid
from .stats import SeedDifference, SeedMean, pareto_front, seed_difference, seed_mean
from .summary import seed_summary

__all__ = ["CompareConfig", "Grid", "SeedDifference", "SeedMean", "pareto_front", "run_grid", "seed_difference",
           "seed_mean", "seed_summary"]
