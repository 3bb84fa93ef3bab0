"""The comparison grid: every (variant, seed) trained by the run's training stages in order
(S2DiT-KD, then S2DiT-AR from it) on one cache, the last stage's student scored by the oracle,
its per-chunk cost measured; ``results.json`` and the page written last.

    OUT/<variant>/seed<k>/cell.json     the cell's recipe (its identity), times, checkpoints
    OUT/<variant>/seed<k>/<stage>       each training stage's folder (launch): kd, ar
    OUT/<variant>/seed<k>/eval_ar.json  evaluate_checkpoint of the last stage's checkpoint
    OUT/<variant>/seed<k>/samples/      videos of a few prompts (``[compare] samples``)
    OUT/results.json, OUT/index.html

Each cell is brought up to date on its own, like a stage of the run graph at a finer grain:
a cell whose recipe (its stages' resolved configs and the cache generation) is unchanged
keeps what it has (a finished stage is not relaunched, a finished evaluation is not redone),
an interrupted training resumes from its newest checkpoint (``launch``), and a cell whose recipe
changed is removed and trained again. So adding a variant or a seed trains only the new cells.
Each cell writes only its own folder and record, so cells may run side by side as Ray tasks
(``[compare] max_parallel`` and ``ray``: cells.py); the driver collects the records.

Cost is measured for every cell in this process after all training, passes interleaved over
the cells, so that the figures compared were taken side by side under the same load.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import fsspec
import torch

from cache_schema import load_manifest
from student_train.checkpoint import finished_checkpoint
from student_train.config import StageConfig
from student_train.launch import launch
from student_train.stage_spec import TrainingStage, planned_dropout
from student_train.streaming_cost import TEXT_TOKENS, chunk_flops, chunk_seconds, summarise
from student_train.student import StudentCheckpoint
from student_train.trainer import student_config_for

from .config import CompareConfig
from .rows import student_scores, teacher_scores
from .sharing import shared_record, stage_owners
from .summary import summarise_grid

CELL, RESULTS, PAGE, EVAL = "cell.json", "results.json", "index.html", "eval_ar.json"
RESULTS_VERSION = 1


class Training(NamedTuple):
    """A training stage of every cell, with the run's recipe for it (its section)."""

    spec: TrainingStage
    config: StageConfig


def _models(config: StageConfig) -> bool:
    """Whether a stage builds its student from a ``model`` table (which a variant overrides);
    a stage without one starts from the student of the stage before it."""
    return "model" in {f.name for f in dataclasses.fields(config)}


@dataclass(kw_only=True)
class Grid:
    """A comparison: the ``[compare]`` section and what it shares with the run."""

    compare: CompareConfig
    # The run's training stages in order, each with its recipe; the first builds the student
    # (its model is the variants' base), the last one's student is scored, sampled and costed
    trainings: tuple[Training, ...]
    cache_url: str  # CACHE@TAG
    generation: int  # the generation the tag named (part of every cell's identity)
    out: str  # RUN/compare
    eval_seed: int = 0  # [eval] seed: the same held-out noise as the run's own scores
    workers: int = 1  # Ray Train workers per training (1: in this process)
    max_failures: int = 0
    sample_prompts: tuple[str, ...] = ()
    progress: bool = False
    log: Callable[[str], None] = print

    def folder(self, variant: str, seed: int) -> str:
        return f"{self.out.rstrip('/')}/{variant}/seed{seed}"

    def __post_init__(self) -> None:
        if not self.trainings:
            raise ValueError("a comparison needs at least one training stage")

    def configs(self, variant: str, seed: int) -> tuple[StageConfig, ...]:
        """The training configs of a cell, stage by stage: the run's recipes with this
        variant's overrides of them, this seed, this variant's model."""
        out = []
        for t in self.trainings:
            changes = {**self.compare.recipe(variant, t.spec.table), "seed": seed}
            if _models(t.config):
                changes["model"] = self.compare.model(t.config.model, variant)
            out.append(dataclasses.replace(t.config, **changes))
        return tuple(out)

    @property
    def last(self) -> str:
        """The cell record's key of the checkpoint that is scored, sampled and costed."""
        return f"{self.trainings[-1].spec.name}_checkpoint"

    def cells(self) -> list[tuple[str, int]]:
        """(variant, seed), seed by seed: a grid stopped early has every variant's first seed
        (a variant on some seeds only has cells of those)."""
        return [(v, s) for s in self.compare.seeds for v in self.compare.variants
                if s in self.compare.seeds_of(v)]


def _fs(url: str):
    return fsspec.core.url_to_fs(url)


def _read(url: str) -> dict[str, Any] | None:
    fs, path = _fs(url)
    return json.loads(fs.cat_file(path)) if fs.exists(path) else None


def _write(url: str, data: dict[str, Any]) -> None:
    fs, path = _fs(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    tmp = f"{path}.tmp"
    fs.pipe_file(tmp, json.dumps(data, indent=1).encode())
    fs.mv(tmp, path)


def _exists(checkpoint: str) -> bool:
    fs, path = _fs(checkpoint)
    return fs.exists(f"{path}/state.json")


def _identity(grid: Grid, variant: str, seed: int) -> dict[str, Any]:
    configs = grid.configs(variant, seed)
    return {**{t.spec.name: c.to_json() for t, c in zip(grid.trainings, configs, strict=True)},
            "cache": grid.cache_url, "generation": grid.generation}


def prepare_cell(grid: Grid, variant: str, seed: int) -> dict[str, Any]:
    """The cell's record, new or as left; a cell trained under another recipe, or whose
    recorded checkpoint was removed, is removed (and so trained again)."""
    folder = grid.folder(variant, seed)
    fs, root = _fs(folder)
    identity = _identity(grid, variant, seed)
    record = _read(f"{folder}/{CELL}")
    if record is not None:
        gone = [c for c in (record.get(f"{t.spec.name}_checkpoint") for t in grid.trainings)
                if c and not _exists(c)]
        shared, now = record.get("shared", {}), shared_record(grid, variant, seed)
        moved = [stage for stage, owner in shared.items() if now.get(stage) != owner]
        why = ("its recipe changed since it was trained" if record.get("identity") != identity
               else f"its checkpoint {gone[0]} is gone" if gone
               else f"its {moved[0].upper()} came from {shared[moved[0]]}, which no longer trains it"
               if moved else None)
        if why:
            grid.log(f"{variant} seed {seed}: {why}; training it again")
            fs.rm(root, recursive=True)
            record = None
    if record is None:
        if fs.exists(root) and fs.ls(root):
            raise FileExistsError(f"{folder} exists but has no {CELL}: the compare stage did not "
                                  "write it; move it away")
        record = {"variant": variant, "seed": seed, "identity": identity,
                  **{f"{t.spec.name}_seconds": 0.0 for t in grid.trainings}, "resumed": False}
        _write(f"{folder}/{CELL}", record)
    return record


def training_inputs(spec: TrainingStage, cache_url: str, previous: str | None) -> dict[str, str]:
    """The URLs ``spec`` trains from, as its spec names them: the cache, and for a stage that
    starts from a trained student (``init_url``, e.g. self-forcing) the previous stage's
    checkpoint."""
    known = {"cache_url": cache_url, "init_url": previous}
    unknown = sorted(set(spec.inputs) - set(known))
    if unknown:
        raise ValueError(f"training stage {spec.name!r} trains from {unknown}, which the grid "
                         f"cannot give (it gives {', '.join(known)})")
    if "init_url" in spec.inputs and previous is None:
        raise ValueError(f"training stage {spec.name!r} starts from a trained student: the grid "
                         "must train another stage before it")
    return {name: known[name] for name in spec.inputs}


def train_cell(grid: Grid, record: dict[str, Any]) -> None:
    """Every stage of a cell in order, each unless its record holds its finished checkpoint."""
    variant, seed = record["variant"], record["seed"]
    folder = grid.folder(variant, seed)
    previous = None
    owners = stage_owners(grid, variant, seed)
    for (spec, _), config in zip(grid.trainings, grid.configs(variant, seed), strict=True):
        stage = spec.name
        if not record.get(f"{stage}_checkpoint") and stage in owners:
            borrow_stage(grid, record, stage, owners[stage])
        if not record.get(f"{stage}_checkpoint"):
            inputs = training_inputs(spec, grid.cache_url, previous)
            grid.log(f"{variant} seed {seed}: training {stage.upper()}")
            t0 = time.perf_counter()
            done = launch(spec, config, grid.workers, out_url=f"{folder}/{stage}",
                          progress=grid.progress, max_failures=grid.max_failures, log=grid.log,
                          **inputs)
            # wall time of the processes that finished it (an interrupted one's share is lost:
            # ``resumed`` marks the figure as a lower bound)
            record[f"{stage}_seconds"] += time.perf_counter() - t0
            record["resumed"] = record["resumed"] or done.resumed_from is not None
            record[f"{stage}_checkpoint"] = finished_checkpoint(
                f"{folder}/{stage}", spec.total_steps(config), f"{variant} seed {seed} {stage.upper()}")
            _write(f"{folder}/{CELL}", record)
        previous = record[f"{stage}_checkpoint"]


def borrow_stage(grid: Grid, record: dict[str, Any], stage: str, owner: str) -> None:
    """The owner's finished ``stage`` as this cell's (sharing.py): its checkpoint and wall time."""
    variant, seed = record["variant"], record["seed"]
    trained = _read(f"{grid.folder(owner, seed)}/{CELL}") or {}
    if not trained.get(f"{stage}_checkpoint"):
        raise RuntimeError(f"{variant} seed {seed}: its {stage.upper()} is {owner} seed {seed}'s (the same "
                           f"recipe and seed), which has not trained it: bring {owner} up to date first")
    record[f"{stage}_checkpoint"] = trained[f"{stage}_checkpoint"]
    record[f"{stage}_seconds"] = trained[f"{stage}_seconds"]
    record["resumed"] = record["resumed"] or trained["resumed"]  # its time may be a lower bound
    record.setdefault("shared", {})[stage] = f"{owner}/seed{seed}"
    grid.log(f"{variant} seed {seed}: {stage.upper()} is {owner}'s (the same recipe and seed): not trained again")
    _write(f"{grid.folder(variant, seed)}/{CELL}", record)


def _eval_key(grid: Grid, record: dict[str, Any]) -> dict[str, Any]:
    """What the cell's evaluation was made from (redone when it changes)."""
    c = grid.compare
    return {"checkpoint": record[grid.last], "per_class": c.per_class, "lengths": list(c.lengths),
            "noise": c.noise, "seed": grid.eval_seed, **c.eval_options()}


def _evaluated(grid: Grid, record: dict[str, Any]) -> bool:
    fs, root = _fs(grid.folder(record["variant"], record["seed"]))
    return record.get("eval", {}).get("key") == _eval_key(grid, record) and fs.exists(f"{root}/{EVAL}")


def _samples_key(grid: Grid, record: dict[str, Any]) -> dict[str, Any] | None:
    """What the cell's videos are made from; None: the cell renders none (not its variant's
    first seed, or ``[compare] samples = 0``)."""
    prompts = list(grid.sample_prompts[: grid.compare.samples])
    if not prompts or record["seed"] != grid.compare.seeds_of(record["variant"])[0]:
        return None
    return {"checkpoint": record[grid.last], "prompts": prompts}


def _sampled(grid: Grid, record: dict[str, Any]) -> bool:
    """The cell renders no videos, or has them for its current key."""
    key = _samples_key(grid, record)
    return key is None or record.get("samples", {}).get("key") == key


def evaluate_cell(grid: Grid, record: dict[str, Any]) -> None:
    """The oracle's scores of the cell's last student at every length (kept while unchanged)."""
    from pipeline.eval import evaluate_checkpoint, save_report

    c = grid.compare
    if _evaluated(grid, record):
        return
    folder = grid.folder(record["variant"], record["seed"])
    grid.log(f"{record['variant']} seed {record['seed']}: scoring {grid.trainings[-1].spec.title} "
             f"at {list(c.lengths)}x")
    t0 = time.perf_counter()
    # the streaming rows only: the grid's figures (the whole-clip rows of a streaming student
    # are not in its tables; not in the key, so cells scored with them are kept)
    report = evaluate_checkpoint(record[grid.last], per_class=c.per_class, seed=grid.eval_seed,
                                 noise=c.noise, lengths=tuple(c.lengths), whole_clip=False,
                                 **c.eval_options())
    save_report(report, f"{folder}/{EVAL}")
    record["eval"] = {"key": _eval_key(grid, record), "seconds": time.perf_counter() - t0}
    _write(f"{folder}/{CELL}", record)


def sample_cell(grid: Grid, record: dict[str, Any]) -> None:
    """Videos of the first ``[compare] samples`` prompts (each variant's first seed only)."""
    from pipeline.text_to_video import SampleConfig, generate

    if _sampled(grid, record):
        return
    key = _samples_key(grid, record)
    prompts = key["prompts"]
    folder = grid.folder(record["variant"], record["seed"])
    sidecar = generate(SampleConfig(checkpoint=record[grid.last], prompts=prompts,
                                    out=f"{folder}/samples/sample"))
    prefix = grid.out.rstrip("/") + "/"
    record["samples"] = {"key": key, "prompts": sidecar["prompts"],
                         "videos": [v.removeprefix(prefix) for v in sidecar["outputs"].get("videos", [])]}
    _write(f"{folder}/{CELL}", record)


def cell_pending(grid: Grid, record: dict[str, Any]) -> bool:
    """Whether ``run_cell`` has anything left to do for a prepared cell: a training, its
    evaluation, its videos."""
    if not all(record.get(f"{t.spec.name}_checkpoint") for t in grid.trainings):
        return True
    return not _evaluated(grid, record) or not _sampled(grid, record)


def run_cell(grid: Grid, record: dict[str, Any]) -> dict[str, Any]:
    """A prepared cell brought up to date (trained, scored, sampled, each only if not done);
    its record. It writes only its folder (``grid.folder``): cells may run side by side."""
    train_cell(grid, record)
    evaluate_cell(grid, record)
    sample_cell(grid, record)
    return record


def measure_costs(grid: Grid, records: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Per cell and length: per-chunk seconds (``latency_repeats`` passes, interleaved over the
    cells) and GFLOPs of one chunk at the clip's end."""
    c = grid.compare
    students = {(r["variant"], r["seed"]): StudentCheckpoint.load(r[grid.last]).long_stream(
        lcha_window=c.lcha_window) for r in records}
    passes: dict[tuple[str, int, int], list[list[float]]] = {}
    grid.log(f"measuring per-chunk cost of {len(students)} students at {list(c.lengths)}x "
             f"({c.latency_repeats} passes, batch {c.latency_batch})")
    for _ in range(c.latency_repeats):
        for cell, student in students.items():
            for m in c.lengths:
                passes.setdefault((*cell, m), []).append(
                    chunk_seconds(student, m, batch=c.latency_batch, guidance=c.guidance))
    costs: dict[tuple[str, int], dict[str, Any]] = {}
    for cell, student in students.items():
        costs[cell] = {f"{m}x": {**summarise(passes[(*cell, m)]),
                                 "gflops": chunk_flops(student, m, guidance=c.guidance) / 1e9}
                       for m in c.lengths}
    return costs


def twin_variants(grid: Grid) -> dict[str, str]:
    """{variant: the earlier variant it equals}: the same students from the same recipes (e.g.
    a searched layout that comes out as the reference's own), trained once, under the first name."""
    first: dict[str, str] = {}
    twins = {}
    for name in grid.compare.variants:  # the same recipes on the same seeds
        identity = json.dumps([_identity(grid, name, grid.compare.seeds[0]), grid.compare.seeds_of(name)],
                              sort_keys=True)
        if identity in first:
            twins[name] = first[identity]
        else:
            first[identity] = name
    return twins


def _resolved_variants(grid: Grid, twins: dict[str, str]) -> dict[str, Any]:
    """Each variant's overrides and the whole student it trains (read from the checkpoint of
    the stage that builds it, the first); a twin names the variant whose cells it shares."""
    first = grid.trainings[0]
    base = first.config.model if _models(first.config) else {}
    key = f"{first.spec.name}_checkpoint"
    out = {}
    for name, overrides in grid.compare.variants.items():
        trained_as = twins.get(name, name)
        record = _read(f"{grid.folder(trained_as, grid.compare.seeds_of(trained_as)[0])}/{CELL}") or {}
        model = None
        if record.get(key):
            state = _read(f"{record[key]}/state.json") or {}
            model = state.get("model_config")
        out[name] = {"overrides": overrides, "train_model": grid.compare.model(base, name),
                     "model": model, **({"same_as": trained_as} if name in twins else {})}
    return out


def check_guidance(grid: Grid) -> None:
    """``[compare] guidance`` != 1 only when every variant's scored student will have been
    trained with conditioning dropout, as its recipes say (stage_spec.planned_dropout; the
    refusal ``s2dit eval --guidance`` gives a checkpoint without it), before anything trains."""
    c = grid.compare
    if c.guidance == 1.0:
        return
    specs, without = [t.spec for t in grid.trainings], []
    for name in c.variants:
        try:
            configs = grid.configs(name, c.seeds[0])
        except (ValueError, TypeError) as exc:  # as check_variants says it
            raise ValueError(f"[compare.variants] {name}: {exc}") from None
        if not planned_dropout(zip(specs, configs, strict=True)) > 0:
            without.append(name)
    if without:
        raise ValueError(
            f"[compare] guidance = {c.guidance:g}: classifier-free guidance needs students trained "
            f"with conditioning dropout, and the scored student of {', '.join(without)} is trained "
            f"with cond_dropout = 0 (it has no unconditional mode): set cond_dropout in the recipes "
            f"({', '.join(f'[{t.spec.table}]' for t in grid.trainings)}, or a variant's own table "
            "of them), or score with guidance = 1")


def check_variants(grid: Grid) -> None:
    """Every variant's whole student on this cache's shapes, before any cell trains: a width
    that does not split into its heads, a stride that does not divide the token grid, ... is
    one error naming the variant, not a failure hours into the grid."""
    configs = {}
    for name in grid.compare.variants:
        try:  # a recipe override breaking a rule across fields (steps + causal_steps = 0, ...)
            configs[name] = grid.configs(name, grid.compare.seeds[0])
        except (ValueError, TypeError) as exc:
            raise ValueError(f"[compare.variants] {name}: {exc}") from None
    check_guidance(grid)
    layout = load_manifest(grid.cache_url).layout
    for name, stage_configs in configs.items():
        for config in filter(_models, stage_configs):
            fields = {f.name for f in dataclasses.fields(config)}
            layout_file = config.layout_file if "layout_file" in fields else None
            try:
                student_config_for(layout, config.model, layout_file)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"[compare.variants] {name}: {exc}") from None


def run_grid(grid: Grid) -> dict[str, Any]:
    """Train, score and cost every cell (each only as far as it is not done), then write
    ``results.json`` and ``index.html``; returns the results."""
    from .matching import resolved_grid  # (it imports this module)
    from .page import write_page

    grid = resolved_grid(grid)  # `match` / `search` variants made concrete, measured once (matching.py)
    check_variants(grid)
    from .cells import run_cells

    twins = twin_variants(grid)
    for twin, name in twins.items():
        grid.log(f"{twin}: the same students as {name} (same model and recipes): trained once, as {name}")
    once = dataclasses.replace(grid, compare=dataclasses.replace(grid.compare, variants={
        k: v for k, v in grid.compare.variants.items() if k not in twins}))
    records = run_cells(once)  # in this process, or side by side as Ray tasks
    costs = measure_costs(once, records)
    cells, teacher = [], {}
    names = [t.spec.name for t in grid.trainings]
    for record in records:
        cell = (record["variant"], record["seed"])
        seconds = {name: record[f"{name}_seconds"] for name in names}
        report = _read(f"{grid.folder(*cell)}/{EVAL}") or {}
        teacher = teacher or teacher_scores(report)  # the same in every cell (rows.py)
        cells.append({
            "variant": cell[0], "seed": cell[1], "folder": f"{cell[0]}/seed{cell[1]}",
            **{f"{name}_checkpoint": record[f"{name}_checkpoint"] for name in names},
            "train_seconds": {**seconds, "total": sum(seconds.values())},
            "resumed": record["resumed"], "shared": record.get("shared", {}),
            "eval_seconds": record["eval"].get("seconds"),
            "scores": student_scores(report), "cost": costs[cell],
            "samples": record.get("samples", {}).get("videos", []),
        })
    cells += [{**cell, "variant": twin, "same_as": name} for twin, name in twins.items()
              for cell in cells if cell["variant"] == name]
    c = grid.compare
    results = {
        "version": RESULTS_VERSION,
        "written": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cache": grid.cache_url, "generation": grid.generation,
        "seeds": list(c.seeds), "lengths": list(c.lengths), "per_class": c.per_class,
        "noise": c.noise, "eval_seed": grid.eval_seed, **c.eval_options(),
        "recipes": {t.spec.table: t.config.to_json() for t in grid.trainings},
        "variants": _resolved_variants(grid, twins),
        "cost_setup": {"latency_batch": c.latency_batch, "latency_repeats": c.latency_repeats,
                       "text_tokens": TEXT_TOKENS, "flops_batch": 1,
                       "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
                       "processor": platform.processor(), "python": platform.python_version(),
                       "torch": torch.__version__},
        "cells": cells,
        "teacher": teacher,
    }
    results.update(summarise_grid(results))
    _write(f"{grid.out.rstrip('/')}/{RESULTS}", results)
    write_page(results, f"{grid.out.rstrip('/')}/{PAGE}")
    return results
