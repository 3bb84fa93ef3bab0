"""``write_report(run_dir)``: the run's HTML report, from whatever the run folder holds.

Sections: stages and timings, config, cache card, training curves of each training stage, the
quality table, the videos of each stage side by side, the sample stage's own outputs, and the
students compared when the run has a ``[compare]`` section (pipeline/compare/page.py draws it).
The training stages and the stages that score them come from the run graph's registry
(trained.py). A stage that has not run shows as pending; a section that cannot be drawn (a
corrupt file) shows its error and the rest of the page still renders.
"""

from __future__ import annotations

import datetime
import traceback
from collections.abc import Callable, Iterable
from pathlib import PurePosixPath
from typing import Any

from cache_schema import list_tags, load_manifest
from cache_schema.words import count
from pipeline.video_io import atomic_output
from teacher_jobs.teachers import has_oracle

from .assets import Assets
from .cache_card import cache_card
from .curves import stage_curves
from .html import document, esc, fmt, key_values, pending, section, status_badge, table
from .quality import chunk_curves, quality_table
from .run_folder import STAGES, RunFolder
from .trained import scored_stages, trained_stages
from .videos import cached_videos_html, sample_stage_html, stage_videos_html


def _stages(run: RunFolder) -> str:
    state = run.state()
    note = ""
    if state.missing:
        note = pending("no run_state.json: statuses inferred from the files present")
    elif state.error:
        note = f'<p class="error">{esc(state.error)}</p>'
    rows = []
    total = 0.0
    for name in STAGES:
        rec = run.stage(name)
        seconds = rec.get("seconds")
        if isinstance(seconds, (int, float)):
            total += seconds
        why = (f'<span class="error">{esc(rec["error"])}</span>' if rec.get("error")
               else esc(rec.get("reason", "")))
        if name == "report" and rec["status"] == "running":
            why = "writing this page"
        rows.append([esc(name), status_badge(rec["status"]), fmt(seconds) if seconds is not None else "",
                     esc(rec.get("started", "")), esc(rec.get("finished", "")), why])
    return (note + table(["stage", "status", "seconds", "started", "finished", "error or reason"], rows,
                         table_id="stages", raw_cells=True)
            + f'<p class="muted">total recorded stage time {total:.1f} s</p>')


def _config(run: RunFolder) -> str:
    toml = run.text("run.toml")
    if toml.value is None:
        return pending("no run.toml yet") if toml.missing else f'<p class="error">{esc(toml.error)}</p>'
    return f'<pre id="run-config">{esc(toml.value)}</pre>'


def _cache_ref(run: RunFolder) -> str | None:
    if not run.exists("cache"):
        return None
    try:
        tags = list_tags(run.at("cache"))
    except (OSError, ValueError):
        tags = {}
    return run.at("cache@train") if "train" in tags else run.at("cache")


def _cache(run: RunFolder, assets: Assets) -> str:
    ref = _cache_ref(run)
    if ref is None:
        return pending("no cache yet (stage generate)")
    if load_manifest(ref) is None:
        return pending("the cache has no committed generation yet (stage generate)")
    body = cache_card(ref, assets, detail=True)
    verify = run.json("verify.json")
    if verify.value is not None:
        v = verify.value
        body += "<h3>Verification</h3>" + key_values(
            [("ok", v.get("ok")), ("deep", v.get("deep")), ("checked shards", v.get("checked_shards")),
             ("checked samples", v.get("checked_samples")),
             ("problems", "; ".join(map(str, v.get("problems", []))) or "none")], table_id="verify")
    else:
        body += "<h3>Verification</h3>" + (pending("not verified yet (stage verify)") if verify.missing
                                          else f'<p class="error">{esc(verify.error)}</p>')
    return body


def _training(run: RunFolder) -> str:
    return "".join(stage_curves(run, t.folder, t.title[:1].upper() + t.title[1:])
                   for t in trained_stages())


def _not_run(run: RunFolder, stage: str) -> str | None:
    """Why a skipped or failed stage has no output ("skipped: <reason>"), None otherwise."""
    rec = run.stage(stage)
    if rec["status"] not in ("skipped", "failed"):
        return None
    return f"{rec['status']}: {rec.get('reason') or rec.get('error') or stage}"


def _quality(run: RunFolder) -> str:
    scored = scored_stages()
    loaded = {t.scores: run.json(t.scores) for t in scored}
    errors = "".join(f'<p class="error">{esc(v.error)}</p>' for v in loaded.values() if v.error)
    missing = {}
    for t in scored:
        why = _not_run(run, t.scored_by)
        if loaded[t.scores].value is None and why:
            missing[t.scores] = why
    streaming = [t for t in scored if t.streams]
    curves = ("".join(chunk_curves(loaded[t.scores].value, t.scored_by) for t in streaming)
              if streaming else chunk_curves(None))
    return (errors + quality_table(*(loaded[t.scores].value for t in scored), missing=missing,
                                   models=scored)
            + "<h3>Streaming, chunk by chunk</h3>" + curves)


def _videos(run: RunFolder, assets: Assets) -> str:
    ref = _cache_ref(run)
    if ref is None:
        return pending("no cache yet: the teacher's videos come with stage generate")
    manifest = load_manifest(ref)
    if manifest is None:
        return pending("the cache has no committed generation yet")
    trained = trained_stages()
    notes = {t.model: why for t in trained if (why := _not_run(run, t.stage))}
    students = [(t.model, run.at(t.folder)) for t in trained]
    if not has_oracle(manifest.fingerprint):  # no oracle: the cached samples' noise
        return cached_videos_html(ref, students, assets, notes)
    return stage_videos_html(ref, students, assets, notes)


def _sample(run: RunFolder, assets: Assets) -> str:
    record = run.json("preview/preview.json")
    if record.value is None:
        return pending("the sample stage has not run yet") if record.missing else f'<p class="error">{esc(record.error)}</p>'
    # the clips are copied beside the report, so a report written elsewhere (--out) still plays them
    for url in record.value.get("outputs", {}).get("videos", []):
        name = PurePosixPath(str(url)).name
        data = run.fs.cat_file(f"{run.root}/preview/{name}")
        assets.put(f"sample_{name}", data)
    return sample_stage_html(record.value, f"{assets.prefix}/sample_" if assets.prefix else "sample_")


def _compare(run: RunFolder, link_prefix: str) -> str:
    from pipeline.compare.page import comparison_html  # (it draws with this package's helpers)

    rec = run.stage("compare")
    if rec["status"] in ("skipped", "failed"):
        return pending(f"{rec['status']}: {rec.get('reason') or rec.get('error') or 'compare'}")
    results = run.json("compare/results.json")
    if results.value is None:
        return pending("the compare stage has not run yet") if results.missing else f'<p class="error">{esc(results.error)}</p>'
    return (f'<p><a href="{esc(link_prefix)}index.html">the comparison page</a> (compare/index.html)</p>'
            + comparison_html(results.value, link_prefix=link_prefix))


def _status(statuses: dict[str, str], stages: Iterable[str]) -> str:
    """A section's status from its stages' in order: the first not done, else done."""
    told = [statuses[name] for name in stages]
    return next((status for status in told if status != "done"), told[-1] if told else "pending")


def _guarded(build: Callable[[], str]) -> str:
    """A section's HTML, or its error: a report of a broken run must still render."""
    try:
        return build()
    except Exception as exc:  # noqa: BLE001 - shown on the page, with the traceback's last line
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return (f'<p class="error">could not draw this section: {esc(type(exc).__name__)}: {esc(exc)} '
                f"({esc(PurePosixPath(where.filename).name)}:{where.lineno})</p>")


def stages_done(statuses: dict[str, str]) -> str:
    """``3 of 12 stages done or skipped`` (``1 of 1 stage``) for the page's header."""
    done = sum(1 for s in statuses.values() if s in ("done", "skipped"))
    return f"{done} of {count(len(statuses), 'stage')} done or skipped"


def write_report(run_dir: str, out: str | None = None,
                 progress: Callable[[int, int, str], None] | None = None) -> str:
    """Write ``RUN_DIR/report.html`` (or ``out``) with its assets beside it; returns its path.
    ``progress(done, total, section)`` is told before each section is built.

    Works on a finished, partial or failed run; never raises on a missing stage."""
    run = RunFolder(run_dir)
    target = out or run.at("report.html")
    parent, name = target.rsplit("/", 1) if "/" in target else (".", target)
    assets_dir = "report_assets" if out is None else f"{PurePosixPath(name).stem}_assets"
    assets = Assets(f"{parent}/{assets_dir}", assets_dir)
    statuses = {s: run.status(s) for s in STAGES}
    failed = [s for s, st in statuses.items() if st == "failed"]
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    header = (f"<h1>s2dit run report</h1><p class=\"muted\">{esc(run.url)} \u00b7 written {esc(now)} \u00b7 "
              f"{esc(stages_done(statuses))}"
              + (f" \u00b7 <span class=\"error\">failed: {esc(', '.join(failed))}</span>" if failed else "")
              + "</p>")
    parts: list[tuple[str, Callable[[], str], dict[str, Any]]] = [
        ("Stages and timings", lambda: _stages(run), {"section_id": "stages-section"}),
        ("Config", lambda: _config(run), {"section_id": "config"}),
        ("Cache card", lambda: _cache(run, assets),
         {"section_id": "cache", "status": statuses["generate"]}),
        ("Training curves", lambda: _training(run),
         {"section_id": "training", "status": _status(statuses, (t.stage for t in trained_stages()))}),
        ("Quality (analytic oracle)", lambda: _quality(run),
         {"section_id": "quality-section",
          "status": _status(statuses, (t.scored_by for t in scored_stages()))}),
        ("Each stage's videos, same prompts and noise", lambda: _videos(run, assets),
         {"section_id": "videos"}),
        ("Text to video (the sample stage)", lambda: _sample(run, assets),
         {"section_id": "sample", "status": statuses["sample"]}),
        ("Students compared", lambda: _compare(run, "compare/" if out is None else run.at("compare/")),
         {"section_id": "compare-section", "status": statuses["compare"]}),
    ]
    sections = []
    for index, (title, body, kwargs) in enumerate(parts):
        if progress is not None:
            progress(index, len(parts), title)
        sections.append(section(title, _guarded(body), **kwargs))
    page = document(f"s2dit report: {run.url}", header + "".join(sections))
    with atomic_output(target) as path, open(path, "w", encoding="utf-8") as handle:
        handle.write(page)
    return target
