"""`s2dit run`: the whole pipeline as one resumable stage graph over a run folder.

config (the run TOML, includes, bundled configs), stage (what a stage is), state
(run_state.json), fingerprint, runner (skip / resume / rerun), stages/ (one module per stage),
toml_out (run.toml). The run folder's layout is documented in the README ("The run folder")."""

from .config import RunConfig, RunConfigError, bundled_config, load_run_config
from .runner import StageOrderError, run_graph
from .stages import STAGE_NAMES, STAGES

__all__ = ["STAGES", "STAGE_NAMES", "RunConfig", "RunConfigError", "StageOrderError",
           "bundled_config", "load_run_config", "run_graph"]
