"""Found variants made concrete before any cell trains: a knob matched to another variant's
per-chunk latency, or a layout searched under it (issue 26: "equal cost" is measured, not
hand-picked). Specs: matching_spec.py.

"Equal cost" is the per-chunk streaming latency ``measure_costs`` reports (``last5_s`` of
``summarise``: the mean of the last 5 chunks of a stream at the grid's longest length), taken
with the grid's ``latency_batch`` and ``latency_repeats`` on this machine's threads, on random
weights (a dense network's cost does not depend on its values), passes interleaved over the
models compared so that they are timed under the same load. FLOPs are counted beside it. Only
those last chunks are timed (``steady_chunk_seconds``: the chunks before them are committed
without being denoised, which leaves the streaming state the full stream would have).

    match   the choice is the value closest to the reference's latency among those at most
            ``tolerance`` above it. Latency grows with the knob (dim, blocks), so that choice is
            one of the two values around the reference's latency: the sorted candidates are
            bisected for the last one at most as slow as the reference (one pass each, against
            the reference's first reading), then it and the next are timed again beside the
            reference (every pass, interleaved) and the choice is made from those readings; the
            pair moves (at most ``GUARD_ROUNDS`` timings) while they place the reference's
            latency outside it (noise, or a latency not monotone in the knob). Up to 3
            candidates are all timed together at once instead.
    search  the block options are profiled at the task's shapes (search/profile.py, one chunk
            forward against a full KV cache, batch ``latency_batch``), scaled to a chunk (few-step
            forwards + the commit), the cost outside the blocks calibrated so that the
            reference's own layout predicts its measured latency; the DP (search/dp.py) then
            finds the best layout under that latency; the found layout is timed beside the
            reference afterwards (a check, recorded, not a second choice)

Everything measured and chosen is written to ``OUT/matching.json``. A variant whose question
(spec, reference and template models, length, batch, repeats) is unchanged there keeps the
recorded choice without measuring again, so a resumed grid never changes the architecture of a
variant whose cells are trained.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import platform
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from rich.markup import escape

from cache_schema import CacheLayout, load_manifest
from student_train.model import S2DiT, StudentConfig
from student_train.search.dp import Costs, Option, SearchResult, search
from student_train.search.profile import ProfileConfig, options_from_lut, profile
from student_train.stage_spec import TrainingStage
from student_train.streaming_cost import (
    SUMMARY_CHUNKS,
    TEXT_TOKENS,
    chunk_flops,
    clip_chunks,
    steady_chunk_seconds,
    summarise,
)
from student_train.student import StudentCheckpoint
from student_train.trainer import student_config_for

from .grid import Grid, _models, _read, _write, check_variants
from .matching_spec import MatchSpec, SearchSpec, found_spec, model_keys
from .progress import transient_progress

MATCHING, MATCHING_VERSION = "matching.json", 1
LATENCY_RES = 256  # DP latency grid: the cheapest option / this (rounding is < 1% of a block)
GUARD_ROUNDS = 3  # timings of the final pair beside the reference, at most (the first, 2 moves)


@dataclass(frozen=True, slots=True)
class ChunkCost:
    ms: float  # per-chunk latency at the longest length (last 5 chunks, median over passes)
    gflops: float  # one chunk at the clip's end, one stream

    def to_json(self) -> dict[str, float]:
        return {"ms": self.ms, "gflops": self.gflops}


class Measure(Protocol):
    """How latency is measured (tests pass a table; ``OnThisMachine`` times the real thing).
    ``costs``: ``repeats`` interleaved passes (None: the grid's ``latency_repeats``); ``labels``
    name the models and ``what`` the question in the progress line."""

    def costs(self, models: Sequence[StudentConfig], *, repeats: int | None = None,
              labels: Sequence[str] = (), what: str = "") -> list[ChunkCost]: ...

    def blocks(self, model: StudentConfig) -> dict[str, Any]: ...  # a search/profile.py LUT


@dataclass(kw_only=True)
class OnThisMachine:
    """``measure_costs``'s measurement on random-weight students."""

    length: int  # multiple of the trained clip (the grid's longest)
    batch: int  # streams per timed batch (latency_batch)
    repeats: int  # passes (latency_repeats)
    steps: int  # few-step denoising steps per chunk
    spec: TrainingStage  # the scored stage (how it streams: its commit noise level)
    recipe: dict[str, Any]  # its config (JSON)
    guidance: float = 1.0  # != 1: guided chunks (the prompt's and the null text's rows, one batch)
    log: Callable[[str], None] = print
    progress: bool = False  # a progress line on a terminal (what is being timed)
    _gflops: dict[str, float] = dataclasses.field(default_factory=dict)  # by the model's JSON

    def student(self, config: StudentConfig) -> StudentCheckpoint:
        torch.manual_seed(0)
        sigmas = torch.linspace(1.0, 0.0, self.steps + 1).tolist()  # the values do not change the cost
        return _RandomStudent(url="(random weights)", model=S2DiT(config).eval(),
                              state={"plan": {"schedule_sigmas": sigmas}, "config": self.recipe},
                              spec=self.spec)

    def costs(self, models: Sequence[StudentConfig], *, repeats: int | None = None,
              labels: Sequence[str] = (), what: str = "") -> list[ChunkCost]:
        repeats = repeats or self.repeats
        students = [self.student(m) for m in models]
        names = list(labels) or [f"model {i + 1}" for i in range(len(models))]
        count = clip_chunks(students[0], self.length)
        passes: list[list[list[float]]] = [[] for _ in students]
        self.log(f"matching: {what + ': ' if what else ''}timing {', '.join(names)} at {self.length}x "
                 f"({repeats} interleaved passes, batch {self.batch}; per pass the last "
                 f"{min(SUMMARY_CHUNKS, count)} of {count} chunks, those before committed undenoised)")
        with progress_line(self.progress, repeats * len(students)) as show:
            for r in range(repeats):  # interleaved: every model under the same load
                for i, student in enumerate(students):
                    show(f"matching {what}: {names[i]}, pass {r + 1}/{repeats}")
                    passes[i].append(steady_chunk_seconds(student, self.length, batch=self.batch,
                                                          guidance=self.guidance))
        return [ChunkCost(ms=summarise(p)["last5_s"] * 1e3, gflops=self.gflops(m, s))
                for m, s, p in zip(models, students, passes, strict=True)]

    def gflops(self, model: StudentConfig, student: StudentCheckpoint) -> float:
        """``chunk_flops`` of one chunk at the clip's end (counted once per model)."""
        key = json.dumps(model.to_json(), sort_keys=True)
        if key not in self._gflops:
            self._gflops[key] = chunk_flops(student, self.length, guidance=self.guidance) / 1e9
        return self._gflops[key]

    def blocks(self, model: StudentConfig) -> dict[str, Any]:
        chunks = model.latent_frames * self.length // model.chunk_frames
        # one chunk against the KV cache of the middle of the last 5 chunks (what last5_s averages)
        batch = self.batch * (1 if self.guidance == 1.0 else 2)  # guided: one doubled batch
        cfg = ProfileConfig(model=model, batch=batch, past_chunks=max(0, chunks - 3),
                            text_len=TEXT_TOKENS, repeats=max(5, self.repeats))
        self.log(f"matching: profiling block options at {self.length}x, batch {self.batch}")
        return profile(cfg, progress=False)

    def setup(self) -> dict[str, Any]:
        return {"length": self.length, "latency_batch": self.batch, "latency_repeats": self.repeats,
                "timed": f"the last {SUMMARY_CHUNKS} chunks, those before committed undenoised",
                "steps": self.steps, "guidance": self.guidance, "random_weights": True,
                "text_tokens": TEXT_TOKENS, "torch_threads": torch.get_num_threads(),
                "machine": platform.machine(), "processor": platform.processor(),
                "torch": torch.__version__}


@contextmanager
def progress_line(enabled: bool, total: int) -> Iterator[Callable[[str], None]]:
    """A progress line on stderr while students are timed (a terminal only; gone after):
    ``show(what)`` before each timed pass, passes done of ``total``."""
    with transient_progress(enabled) as bar:
        task, started = bar.add_task("matching", total=total), [False]

        def show(what: str) -> None:
            bar.update(task, advance=1 if started[0] else 0, description=escape(what))
            started[0] = True

        yield show


class _RandomStudent(StudentCheckpoint):
    """A student of random weights: timed, never sampled for its outputs (so guidance needs no
    trained unconditional mode)."""

    def check_guidance(self, guidance: float) -> None:
        del guidance


# -- the choices (pure: measurements in, choice out) ----------------------------------------

def choose(reference_ms: float, measured: dict[int, ChunkCost], tolerance: float) -> int:
    """The value whose latency is closest to ``reference_ms`` among those at most ``tolerance``
    above it (a tie: the smaller value)."""
    limit = reference_ms * (1 + tolerance)
    fits = [v for v in sorted(measured) if measured[v].ms <= limit]
    if not fits:
        cheapest = min(measured, key=lambda v: measured[v].ms)
        raise ValueError(f"no candidate is within {tolerance:.0%} of the reference's "
                         f"{reference_ms:.2f} ms (the cheapest timed, {cheapest}, takes "
                         f"{measured[cheapest].ms:.2f} ms): add smaller candidates")
    return min(fits, key=lambda v: (abs(measured[v].ms - reference_ms), v))


Readings = tuple[ChunkCost | None, dict[int, ChunkCost]]
# (values, what, full) -> the reference's reading beside them (None unless asked) and theirs;
# full: every pass (latency_repeats), else one; what: the question, for the progress line
Timer = Callable[[Sequence[int], str, bool, bool], Readings]


def bisect_choice(values: Sequence[int], tolerance: float, time_them: Timer
                  ) -> tuple[int, ChunkCost, dict[int, ChunkCost]]:
    """``choose`` over candidates whose latency grows with the value, timing a few. Among
    increasing latencies the closest to the reference's within the limit is the last one at
    most the reference's or the one after it: that last one is bisected (one pass each, against
    the reference's first reading), then the pair is timed again beside the reference (every
    pass) and the choice made from those readings; the pair moves while they put the
    reference's latency outside it, at most ``GUARD_ROUNDS`` timings, never back to a pair
    timed before. Returns the choice and the readings it was made from (the reference's and
    the pair's). Equals ``choose`` over every candidate when the latency is strictly increasing
    and the timings exact."""
    values = sorted(values)
    n = len(values)
    if n <= 3:  # no fewer timings by bisecting
        ref, readings = time_them(values, "every candidate", True, True)
        return choose(ref.ms, readings, tolerance), ref, readings
    lo, hi, ref_ms = 0, n, None  # below lo: at most the reference's latency; from hi: above it
    while lo < hi:
        mid = (lo + hi) // 2
        ref, reading = time_them([values[mid]], f"probe {values[lo]}..{values[hi - 1]}", ref_ms is None, False)
        ref_ms = ref.ms if ref_ms is None else ref_ms
        lo, hi = (mid + 1, hi) if reading[values[mid]].ms <= ref_ms else (lo, mid)
    last, seen = lo - 1, set()  # the last index at most as slow as the reference (-1: none)
    fitted: list[str] = []  # earlier checks' readings within the limit
    for round_ in range(GUARD_ROUNDS):
        seen.add(last)
        pair = values[max(last, 0):last + 2]
        ref, readings = time_them(pair, f"check {round_ + 1} around the reference", True, True)
        if last + 1 < n and readings[values[last + 1]].ms <= ref.ms:
            step = last + 1
        elif last >= 0 and readings[values[last]].ms > ref.ms:
            step = last - 1
        else:
            break
        if step in seen:
            break
        fitted += [f"{v} at {readings[v].ms / ref.ms:.2f}x" for v in pair
                   if readings[v].ms <= ref.ms * (1 + tolerance)]
        last = step
    try:
        return choose(ref.ms, readings, tolerance), ref, readings
    except ValueError as exc:
        if not fitted:
            raise
        # the pair moved up past a candidate that fitted: the load changed between timings
        raise ValueError(f"{exc}; but an earlier check read {', '.join(fitted)} the reference's "
                         "latency: the timings disagree, the machine's load changed while timing. "
                         "Time on an otherwise idle machine with OMP_NUM_THREADS=1, or raise "
                         "[compare] latency_repeats") from None


def chunk_options(lut: dict[str, Any], scores: dict[str, float], forwards: int) -> list[Option]:
    """The LUT's options with their latency per chunk (``forwards`` block passes per chunk)."""
    options, _ = options_from_lut(lut, scores)
    return [dataclasses.replace(o, latency_ms=o.latency_ms * forwards) for o in options]


def searched_layout(options: list[Option], spec: SearchSpec, budget_ms: float, calibration_ms: float,
                    calibration_layout: Sequence[str]) -> tuple[SearchResult, Costs]:
    """The DP's best layout whose predicted per-chunk latency is within ``budget_ms``; the cost
    outside the blocks (embeddings, head, the sampler's own time) is what the measured
    ``calibration_ms`` of ``calibration_layout`` leaves after its blocks."""
    by_name = {o.name: o for o in options}
    missing = sorted(set(calibration_layout) - set(by_name))
    if missing:
        raise ValueError(f"the reference's layout has blocks {missing} the search has no option "
                         f"for ({', '.join(by_name)}): measure against a layout of those")
    res = min(o.latency_ms for o in options) / LATENCY_RES
    costs = Costs(fixed_latency_ms=calibration_ms - sum(by_name[b].latency_ms for b in calibration_layout),
                  latency_res=res)
    # DP costs are rounded up by at most `res` per block: the slack lets the reference's own
    # layout fit a budget that is its own measured latency
    result = search(options, spec.max_blocks, budget_ms + spec.max_blocks * res, min_blocks=spec.min_blocks,
                    costs=costs, sandwich=spec.sandwich)
    if result is None:
        raise ValueError(f"no layout of {spec.min_blocks or spec.max_blocks}-{spec.max_blocks} blocks "
                         f"fits {budget_ms:.2f} ms per chunk (blocks cost "
                         f"{', '.join(f'{o.name} {o.latency_ms:.2f} ms' for o in options)}, the rest "
                         f"{costs.fixed_latency_ms:.2f} ms)")
    return result, costs


# -- resolving a grid -------------------------------------------------------------------------

def _student(grid: Grid, layout: CacheLayout, name: str, model: dict[str, Any]) -> StudentConfig:
    """The student the first stage would build from [train.model] table ``model``."""
    first = grid.trainings[0].config
    fields = {f.name for f in dataclasses.fields(first)}
    try:
        return student_config_for(layout, model, first.layout_file if "layout_file" in fields else None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"[compare.variants] {name}: {exc}") from None


def _few_steps(grid: Grid) -> int:
    first = grid.trainings[0].config
    if "student_steps" not in {f.name for f in dataclasses.fields(first)}:
        raise ValueError(f"matching needs the few-step count: the first training stage "
                         f"({grid.trainings[0].spec.name}) has no student_steps")
    return int(first.student_steps)


def _base(grid: Grid) -> dict[str, Any]:
    first = grid.trainings[0].config
    return dict(first.model) if _models(first) else {}


def _candidates(grid: Grid, layout: CacheLayout, name: str, spec: MatchSpec,
                template: StudentConfig) -> dict[int, StudentConfig]:
    """{knob value: student} of every candidate, by value; default: half to twice the
    template's value."""
    if spec.over == "dim":
        own, step = template.dim, 2 * template.heads  # an even head size
        values = spec.candidates or tuple(v for v in range(step * -(-own // 2 // step), 2 * own + 1, step)
                                          if v // template.heads >= 6)  # RoPE: >= 6 channels a head
        change = lambda v: {"dim": v}
    else:
        if len(set(template.layout)) > 1:
            raise ValueError(f"[compare.variants] {name}: match over = 'blocks' repeats one block "
                             f"kind; its layout {list(template.layout)} has several")
        own, block = len(template.layout), template.layout[0]
        values = spec.candidates or tuple(range(1, 2 * own + 1))
        change = lambda v: {"layout": [block] * v}
    table = grid.compare.model(_base(grid), name)  # without its match table
    return {v: _student(grid, layout, f"{name} ({spec.over} {v})", {**table, **change(v)})
            for v in sorted(set(values))}


def _timer(grid: Grid, measure: Measure, name: str, spec: MatchSpec, reference: StudentConfig,
           candidates: dict[int, StudentConfig], log: list[dict[str, Any]]) -> Timer:
    """``bisect_choice``'s timer on ``measure``, each timing logged and appended to ``log``."""
    def time_them(values: Sequence[int], what: str, with_reference: bool, full: bool) -> Readings:
        models = [candidates[v] for v in values]
        labels = [f"{spec.over} {v}" for v in values]
        if with_reference:
            models, labels = [reference, *models], [spec.latency_of, *labels]
        repeats = None if full else 1
        costs = measure.costs(models, repeats=repeats, labels=labels, what=f"{name} {what}")
        ref = costs.pop(0) if with_reference else None
        readings = dict(zip(values, costs, strict=True))
        log.append({"what": what, "passes": repeats or grid.compare.latency_repeats,
                    "reference": ref.to_json() if ref else None,
                    "candidates": [{spec.over: v, **c.to_json()} for v, c in readings.items()]})
        beside = f" ({spec.latency_of} {ref.ms:.1f} ms)" if ref else ""
        grid.log(f"{name} {what}: " + ", ".join(f"{spec.over} {v} {c.ms:.1f} ms" for v, c in readings.items())
                 + f" per chunk{beside}")
        return ref, readings

    return time_them


def _match(grid: Grid, measure: Measure, layout: CacheLayout, name: str, spec: MatchSpec,
           reference: StudentConfig, template: StudentConfig) -> dict[str, Any]:
    candidates = _candidates(grid, layout, name, spec, template)
    timings: list[dict[str, Any]] = []
    value, ref, measured = bisect_choice(list(candidates), spec.tolerance,
                                         _timer(grid, measure, name, spec, reference, candidates, timings))
    own = model_keys(grid.compare.variants[name])
    found = {"dim": value} if spec.over == "dim" else {"layout": list(candidates[value].layout)}
    grid.log(f"{name}: {spec.over} {value} ({measured[value].ms:.1f} ms per chunk; "
             f"{spec.latency_of} {ref.ms:.1f} ms; {len(timings)} timings)")
    return {"reference": ref.to_json(), "limit_ms": ref.ms * (1 + spec.tolerance),
            "candidates": [{spec.over: v, **c.to_json()} for v, c in measured.items()],
            "choice": {spec.over: value, **measured[value].to_json()}, "timings": timings,
            "overrides": {**own, **found}}


def _search(grid: Grid, measure: Measure, layout: CacheLayout, name: str, spec: SearchSpec,
            reference: StudentConfig, template: StudentConfig) -> dict[str, Any]:
    # the template with the reference's layout calibrates the cost outside the blocks
    calibration = template.replace(layout=reference.layout)
    lut = measure.blocks(template)
    forwards = _few_steps(grid) + 1  # few-step forwards + the commit of the finished chunk
    models = [reference] if calibration == reference else [reference, calibration]
    ref, *rest = measure.costs(models, labels=[spec.latency_of, "its layout at the template"][:len(models)],
                               what=f"{name} budget")
    calibration_ms = (rest[0] if rest else ref).ms
    options = chunk_options(lut, spec.scores, forwards)
    try:
        result, costs = searched_layout(options, spec, ref.ms, calibration_ms, reference.layout)
    except ValueError as exc:
        raise ValueError(f"[compare.variants] {name}: {exc}") from None
    found = template.replace(layout=result.layout)
    check_ref, check = measure.costs([reference, found], labels=[spec.latency_of, "the found layout"],
                                     what=f"{name} check")  # the found layout timed beside the reference
    grid.log(f"{name}: layout {','.join(result.layout)} (predicted {result.latency_ms:.1f}, "
             f"measured {check.ms:.1f} ms per chunk; {spec.latency_of} {check_ref.ms:.1f} ms)")
    return {"reference": ref.to_json(), "budget_ms": ref.ms, "calibration_ms": calibration_ms,
            "forwards_per_chunk": forwards, "fixed_ms": costs.fixed_latency_ms,
            "latency_res_ms": costs.latency_res,
            "options": [{"name": o.name, "ms": o.latency_ms, "quality": o.quality} for o in options],
            "lut": lut, "result": result.to_json(),
            "check": {"reference": check_ref.to_json(), "found": check.to_json()},
            "overrides": {**model_keys(grid.compare.variants[name]), "layout": list(result.layout)}}


def resolve_variants(grid: Grid, measure: Measure | None = None) -> dict[str, dict[str, Any]]:
    """Every variant's concrete overrides: a ``match`` or ``search`` variant's found from
    measurements (or from ``OUT/matching.json`` when its question is unchanged), the others as
    they are. Writes ``matching.json`` when the grid has found variants."""
    variants = grid.compare.variants
    specs = {n: s for n, o in variants.items() if (s := found_spec(n, o)) is not None}
    if not specs:
        return dict(variants)
    check_variants(grid)  # every variant (found ones at their template) builds, before any timing
    layout = load_manifest(grid.cache_url).layout
    c, url = grid.compare, f"{grid.out.rstrip('/')}/{MATCHING}"
    recorded = (_read(url) or {}).get("variants", {})
    machine = OnThisMachine(length=c.longest, batch=c.latency_batch, repeats=c.latency_repeats,
                            steps=_few_steps(grid), spec=grid.trainings[-1].spec,
                            recipe=grid.trainings[-1].config.to_json(), guidance=c.guidance, log=grid.log,
                            progress=grid.progress)
    setup = machine.setup() if measure is None else {"measure": type(measure).__name__}
    measure = measure or machine
    out, entries = dict(variants), {}
    for name, spec in specs.items():
        reference = _student(grid, layout, spec.latency_of, grid.compare.model(_base(grid), spec.latency_of))
        template = _student(grid, layout, name, grid.compare.model(_base(grid), name))
        question = {"kind": spec.TABLE, "spec": dataclasses.asdict(spec), "reference": reference.to_json(),
                    "template": template.to_json(), "length": c.longest,
                    "latency_batch": c.latency_batch, "latency_repeats": c.latency_repeats,
                    "guidance": c.guidance}
        question = _plain(question)
        old = recorded.get(name)
        if old is not None and old.get("question") == question:
            grid.log(f"{name}: {spec.TABLE} as {MATCHING} recorded it ({old['overrides']})")
            entries[name] = old
        else:
            find = _match if isinstance(spec, MatchSpec) else _search
            written = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            entries[name] = {"question": question, "written": written, "setup": setup,
                             **find(grid, measure, layout, name, spec, reference, template)}
        out[name] = entries[name]["overrides"]
    _write(url, {"version": MATCHING_VERSION, "variants": entries})
    return out


def resolved_grid(grid: Grid, measure: Measure | None = None) -> Grid:
    """``grid`` with every variant concrete (``resolve_variants``)."""
    variants = resolve_variants(grid, measure)
    if variants == grid.compare.variants:
        return grid
    return dataclasses.replace(grid, compare=dataclasses.replace(grid.compare, variants=variants))


def _plain(value: Any) -> Any:
    """JSON's view of ``value`` (tuples as lists), so a recorded question compares equal."""
    import json

    return json.loads(json.dumps(value))
