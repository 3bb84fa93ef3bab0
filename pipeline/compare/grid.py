"""The comparison grid: every (variant, seed) trained by both stages on one cache, scored by
the oracle, its per-chunk cost measured; ``results.json`` and the page written last.

    OUT/<variant>/seed<k>/cell.json     the cell's recipe (its identity), times, checkpoints
    OUT/<variant>/seed<k>/kd, ar        S2DiT-KD and S2DiT-AR training folders (launch)
    OUT/<variant>/seed<k>/eval_ar.json  evaluate_checkpoint of the AR checkpoint
    OUT/<variant>/seed<k>/samples/      videos of a few prompts (``[compare] samples``)
    OUT/results.json, OUT/index.html

Each cell is brought up to date on its own, like a stage of the run graph at a finer grain:
a cell whose recipe (its resolved KD and AR configs and the cache generation) is unchanged
keeps what it has (a finished stage is not relaunched, a finished evaluation is not redone),
an interrupted training resumes from its newest checkpoint (``launch``), and a cell whose recipe
changed is removed and trained again. So adding a variant or a seed trains only the new cells.

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
from typing import Any

import fsspec
import torch

from cache_schema import load_manifest
from student_train.checkpoint import finished_checkpoint
from student_train.config import TrainConfig
from student_train.launch import launch
from student_train.self_forcing import ARConfig
from student_train.stage_spec import TrainingStage
from student_train.stages import get_stage
from student_train.streaming_cost import TEXT_TOKENS, chunk_flops, chunk_seconds, summarise
from student_train.student import StudentCheckpoint
from student_train.trainer import student_config_for

from .config import CompareConfig
from .summary import summarise_grid

CELL, RESULTS, PAGE, EVAL = "cell.json", "results.json", "index.html", "eval_ar.json"
RESULTS_VERSION = 1
SCORE_KEYS = ("adherence", "coverage", "recall", "branch_rate", "mode_tv", "amplitude_bias",
              "ghost_energy", "dispersion_ratio", "samples")
SETS = ("held_out_seeds", "unseen_combinations")


@dataclass(kw_only=True)
class Grid:
    """A comparison: the ``[compare]`` section and what it shares with the run."""

    compare: CompareConfig
    kd: TrainConfig  # the run's [train]: every variant's recipe, its model the variants' base
    ar: ARConfig  # the run's [train_ar]
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

    def configs(self, variant: str, seed: int) -> tuple[TrainConfig, ARConfig]:
        """The two training configs of a cell: the run's recipes, this seed, this model."""
        kd = dataclasses.replace(self.kd, seed=seed, model=self.compare.model(self.kd.model, variant))
        return kd, dataclasses.replace(self.ar, seed=seed)

    def cells(self) -> list[tuple[str, int]]:
        """(variant, seed), seed by seed: a grid stopped early has every variant's first seed."""
        return [(v, s) for s in self.compare.seeds for v in self.compare.variants]


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
    kd, ar = grid.configs(variant, seed)
    return {"kd": kd.to_json(), "ar": ar.to_json(), "cache": grid.cache_url, "generation": grid.generation}


def prepare_cell(grid: Grid, variant: str, seed: int) -> dict[str, Any]:
    """The cell's record, new or as left; a cell trained under another recipe, or whose
    recorded checkpoint was removed, is removed (and so trained again)."""
    folder = grid.folder(variant, seed)
    fs, root = _fs(folder)
    identity = _identity(grid, variant, seed)
    record = _read(f"{folder}/{CELL}")
    if record is not None:
        gone = [c for c in (record.get("kd_checkpoint"), record.get("ar_checkpoint")) if c and not _exists(c)]
        why = ("its recipe changed since it was trained" if record.get("identity") != identity
               else f"its checkpoint {gone[0]} is gone" if gone else None)
        if why:
            grid.log(f"{variant} seed {seed}: {why}; training it again")
            fs.rm(root, recursive=True)
            record = None
    if record is None:
        if fs.exists(root) and fs.ls(root):
            raise FileExistsError(f"{folder} exists but has no {CELL}: the compare stage did not "
                                  "write it; move it away")
        record = {"variant": variant, "seed": seed, "identity": identity, "kd_seconds": 0.0,
                  "ar_seconds": 0.0, "resumed": False}
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
    """Both stages of a cell, each unless its record holds its finished checkpoint."""
    variant, seed = record["variant"], record["seed"]
    folder = grid.folder(variant, seed)
    kd, ar = grid.configs(variant, seed)
    previous = None
    for stage, config in (("kd", kd), ("ar", ar)):
        if not record.get(f"{stage}_checkpoint"):
            spec = get_stage(stage)
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


def evaluate_cell(grid: Grid, record: dict[str, Any]) -> None:
    """The oracle's scores of the cell's S2DiT-AR at every length (kept while unchanged)."""
    from pipeline.eval import evaluate_checkpoint, save_report

    c = grid.compare
    key = {"checkpoint": record["ar_checkpoint"], "per_class": c.per_class, "lengths": list(c.lengths),
           "noise": c.noise, "seed": grid.eval_seed}
    folder = grid.folder(record["variant"], record["seed"])
    fs, root = _fs(folder)
    if record.get("eval", {}).get("key") == key and fs.exists(f"{root}/{EVAL}"):
        return
    grid.log(f"{record['variant']} seed {record['seed']}: scoring S2DiT-AR at {list(c.lengths)}x")
    t0 = time.perf_counter()
    report = evaluate_checkpoint(record["ar_checkpoint"], per_class=c.per_class, seed=grid.eval_seed,
                                 noise=c.noise, lengths=tuple(c.lengths))
    save_report(report, f"{folder}/{EVAL}")
    record["eval"] = {"key": key, "seconds": time.perf_counter() - t0}
    _write(f"{folder}/{CELL}", record)


def sample_cell(grid: Grid, record: dict[str, Any]) -> None:
    """Videos of the first ``[compare] samples`` prompts (each variant's first seed only)."""
    from pipeline.text_to_video import SampleConfig, generate

    prompts = list(grid.sample_prompts[: grid.compare.samples])
    if not prompts or record["seed"] != grid.compare.seeds[0]:
        return
    key = {"checkpoint": record["ar_checkpoint"], "prompts": prompts}
    if record.get("samples", {}).get("key") == key:
        return
    folder = grid.folder(record["variant"], record["seed"])
    sidecar = generate(SampleConfig(checkpoint=record["ar_checkpoint"], prompts=prompts,
                                    out=f"{folder}/samples/sample"))
    prefix = grid.out.rstrip("/") + "/"
    record["samples"] = {"key": key, "prompts": sidecar["prompts"],
                         "videos": [v.removeprefix(prefix) for v in sidecar["outputs"].get("videos", [])]}
    _write(f"{folder}/{CELL}", record)


def _scores(report: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """{set: {"4x": scores}} of the streaming rows of an AR evaluation (the few oracle figures
    the comparison shows, the gate's verdict, and the Wilson intervals of the rates)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for set_key in SETS:
        rows = report.get(set_key)
        if not rows:
            continue
        base = next((k for k in rows if k.startswith("student_ar_") and k.endswith("_streaming")), None)
        if base is None:
            continue
        out[set_key] = {}
        for m in report["lengths"]:
            s = rows.get(base if m == 1 else f"{base}_{m}x")
            if s is None:
                continue
            kept = {k: s[k] for k in SCORE_KEYS if k in s}
            kept.update({f"{k}_ci": s[f"{k}_ci"] for k in SCORE_KEYS if f"{k}_ci" in s})
            kept["gate"] = {"passed": bool(s["gate"]["passed"]), "failed": list(s["gate"]["failed"])}
            out[set_key][f"{m}x"] = kept
    return out


def measure_costs(grid: Grid, records: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Per cell and length: per-chunk seconds (``latency_repeats`` passes, interleaved over the
    cells) and GFLOPs of one chunk at the clip's end."""
    c = grid.compare
    students = {(r["variant"], r["seed"]): StudentCheckpoint.load(r["ar_checkpoint"]) for r in records}
    passes: dict[tuple[str, int, int], list[list[float]]] = {}
    grid.log(f"measuring per-chunk cost of {len(students)} students at {list(c.lengths)}x "
             f"({c.latency_repeats} passes, batch {c.latency_batch})")
    for _ in range(c.latency_repeats):
        for cell, student in students.items():
            for m in c.lengths:
                passes.setdefault((*cell, m), []).append(chunk_seconds(student, m, batch=c.latency_batch))
    costs: dict[tuple[str, int], dict[str, Any]] = {}
    for cell, student in students.items():
        costs[cell] = {f"{m}x": {**summarise(passes[(*cell, m)]), "gflops": chunk_flops(student, m) / 1e9}
                       for m in c.lengths}
    return costs


def _resolved_variants(grid: Grid) -> dict[str, Any]:
    """Each variant's overrides and the whole student it trains (read from its checkpoint)."""
    out = {}
    for name, overrides in grid.compare.variants.items():
        record = _read(f"{grid.folder(name, grid.compare.seeds[0])}/{CELL}") or {}
        model = None
        if record.get("kd_checkpoint"):
            state = _read(f"{record['kd_checkpoint']}/state.json") or {}
            model = state.get("model_config")
        out[name] = {"overrides": overrides, "train_model": grid.compare.model(grid.kd.model, name),
                     "model": model}
    return out


def check_variants(grid: Grid) -> None:
    """Every variant's whole student on this cache's shapes, before any cell trains: a width
    that does not split into its heads, a stride that does not divide the token grid, ... is
    one error naming the variant, not a failure hours into the grid."""
    layout = load_manifest(grid.cache_url).layout
    for name in grid.compare.variants:
        kd, _ = grid.configs(name, grid.compare.seeds[0])
        try:
            student_config_for(layout, kd.model, kd.layout_file)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"[compare.variants] {name}: {exc}") from None


def run_grid(grid: Grid) -> dict[str, Any]:
    """Train, score and cost every cell (each only as far as it is not done), then write
    ``results.json`` and ``index.html``; returns the results."""
    from .page import write_page

    check_variants(grid)
    records = []
    for variant, seed in grid.cells():
        record = prepare_cell(grid, variant, seed)
        train_cell(grid, record)
        evaluate_cell(grid, record)
        sample_cell(grid, record)
        records.append(record)
    costs = measure_costs(grid, records)
    cells = []
    for record in records:
        cell = (record["variant"], record["seed"])
        eval_url = f"{grid.folder(*cell)}/{EVAL}"
        cells.append({
            "variant": cell[0], "seed": cell[1], "folder": f"{cell[0]}/seed{cell[1]}",
            "kd_checkpoint": record["kd_checkpoint"], "ar_checkpoint": record["ar_checkpoint"],
            "train_seconds": {"kd": record["kd_seconds"], "ar": record["ar_seconds"],
                              "total": record["kd_seconds"] + record["ar_seconds"]},
            "resumed": record["resumed"], "eval_seconds": record["eval"].get("seconds"),
            "scores": _scores(_read(eval_url) or {}), "cost": costs[cell],
            "samples": record.get("samples", {}).get("videos", []),
        })
    c = grid.compare
    results = {
        "version": RESULTS_VERSION,
        "written": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cache": grid.cache_url, "generation": grid.generation,
        "seeds": list(c.seeds), "lengths": list(c.lengths), "per_class": c.per_class,
        "noise": c.noise, "eval_seed": grid.eval_seed,
        "recipes": {"train": grid.kd.to_json(), "train_ar": grid.ar.to_json()},
        "variants": _resolved_variants(grid),
        "cost_setup": {"latency_batch": c.latency_batch, "latency_repeats": c.latency_repeats,
                       "text_tokens": TEXT_TOKENS, "flops_batch": 1,
                       "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
                       "processor": platform.processor(), "python": platform.python_version(),
                       "torch": torch.__version__},
        "cells": cells,
    }
    results.update(summarise_grid(results))
    _write(f"{grid.out.rstrip('/')}/{RESULTS}", results)
    write_page(results, f"{grid.out.rstrip('/')}/{PAGE}")
    return results
