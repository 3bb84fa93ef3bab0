"""`s2dit run`: the whole pipeline as one resumable stage graph over a run folder.

config (the run config and bundled configs), load (the run TOML and its includes), stage
(what a stage is), registry (the one stage list: each stage module registers its stage at an
order), state (run_state.json), fingerprint, runner (skip / resume / rerun), stages/ (one module
per stage, found and registered on import), toml_out (run.toml). The run folder's layout is
documented in the README ("The run folder")."""

from .config import RunConfig, RunConfigError, bundled_config
from .load import load_run_config
from .registry import register_graph_stage, unregister_graph_stage
from .runner import StageOrderError, run_graph
from .stages import SECTIONS, STAGE_NAMES, STAGES

__all__ = ["SECTIONS", "STAGES", "STAGE_NAMES", "RunConfig", "RunConfigError", "StageOrderError",
           "bundled_config", "load_run_config", "register_graph_stage", "run_graph",
           "unregister_graph_stage"]
