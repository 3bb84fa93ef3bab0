"""The comparison page (RUN/compare/index.html) from results.json, and the same body as a
section of the run's report.

The Pareto plot: x = per-chunk latency at the longest length (mean of the last 5 chunks, the
steady state of that length), y = recall there (adherence for a task without recall), one point
per variant at its mean over training seeds with the seeds' 95% t half-widths as error bars,
the front filled and joined. A variant whose chunk is the whole clip (bidirectional_dmd) is
left off it, with a note: its cost is per clip, not per streamed chunk, and at the longest
length it streams clips it never learnt to continue (summary.py ``chunk_of``); the tables give
every variant's frames per chunk beside its cost. Then the reference (the first variant) against
each other variant: the difference in recall and adherence per length with its Welch interval
over seeds (paired seed by seed for a variant that shares a trained stage with it) and the cost
ratio, and one plain sentence per variant at the longest length. Then the table, one row per
variant and length, every figure mean ± half-width over seeds; the teacher's own samplers on the
same noise (full-step, and 4-step Euler and UniPC with no training: reference points, whole
clip, rows.py); the unseen attribute combinations apart; each seed's row; each
variant's videos when ``[compare] samples`` wrote some.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.eval import STRONG_SOLVER, STRONG_SOLVER_TITLE
from pipeline.eval_unseen import UNSEEN_KEYS
from pipeline.report.html import document, esc, pending, table
from pipeline.report.svg import Point, scatter_chart
from pipeline.video_io import atomic_output

from .grid import EVAL
from .stats import SeedDifference, SeedMean
from .summary import PARETO_SET, versus_of, versus_sentences

LABELS = {"recall": "recall \u2191", "adherence": "adherence \u2191"}
SCORE_COLUMNS = (("adherence", "adherence \u2191", 3), ("recall", "recall \u2191", 3),
                 ("mode_tv", "mode TV \u2193", 3), ("amplitude_bias", "amp. bias (0)", 3),
                 ("ghost_energy", "ghost \u2193", 4), ("contrast", "contrast (1)", 2))


def _mean(data: Mapping[str, Any] | None, digits: int = 3, scale: float = 1.0) -> str:
    if not data:
        return '<span class="muted">-</span>'
    m = SeedMean.from_json(data)
    return esc(SeedMean(mean=m.mean * scale, half=None if m.half is None else m.half * scale, n=m.n).text(digits))


def _frames(summary: Mapping[str, Any], variant: str) -> int | None:
    return summary.get(variant, {}).get("chunk", {}).get("frames")


def _whole_clip(summary: Mapping[str, Any], variant: str) -> bool:
    return bool(summary.get(variant, {}).get("chunk", {}).get("whole_clip"))


def _per(summary: Mapping[str, Any], variant: str) -> str:
    """A whole-clip variant's cost unit ("" for a streaming one)."""
    if not _whole_clip(summary, variant):
        return ""
    frames = _frames(summary, variant)
    return f" (per {frames} frames)" if frames else " (per clip)"


def _apart_note(results: Mapping[str, Any]) -> str:
    """Why the whole-clip variants are not on the plot."""
    summary, p = results.get("summary", {}), results.get("pareto") or {}
    names = [v for v in p.get("apart", []) if v in summary]
    if not names:
        return ""
    said = ", ".join(f"{v} ({_frames(summary, v) or 'all'} latent frames at once)" for v in names)
    return (f'<p class="muted" id="pareto-apart">Not on the plot: {esc(said)}. One chunk of it is '
            "the whole trained clip (bidirectional): its cost is per clip, not per streamed chunk, "
            "nothing of the clip exists before that cost is paid, and at lengths beyond 1x it "
            "streams clips it was never trained to continue. Its figures are in the tables "
            "(read it at 1x).</p>")


def pareto_plot(results: Mapping[str, Any]) -> str:
    p = results.get("pareto") or {}
    summary = results.get("summary", {})
    length, y_key = p.get("length"), p.get("y", "recall")
    # plotted variants of several chunk sizes: each label says its own
    sizes = {_frames(summary, v) for v in p.get("points", {})}
    points = []
    for variant in p.get("points", {}):
        cost = SeedMean.from_json(summary[variant]["cost"][length]["last5_s"])
        quality = SeedMean.from_json(summary[variant]["sets"][p["set"]][length]["metrics"][y_key])
        frames = _frames(summary, variant)
        label = f"{variant} ({frames}-frame chunks)" if len(sizes) > 1 and frames else variant
        points.append(Point(label=label, x=cost.mean * 1e3, y=quality.mean,
                            x_half=None if cost.half is None else cost.half * 1e3, y_half=quality.half,
                            marked=variant in p.get("front", [])))
    batch = results.get("cost_setup", {}).get("latency_batch")
    return scatter_chart(f"Quality against per-chunk latency, {length} the trained length",
                         points, x_label=f"ms per chunk (last 5 chunks, batch {batch})",
                         y_label=LABELS.get(y_key, y_key), marked_label="Pareto front",
                         chart_id="pareto") + _apart_note(results)


def versus_sections(results: Mapping[str, Any]) -> str:
    """``versus_section`` of the held-out seeds, then of every other set scored (unseen ones)."""
    return "".join(versus_section(results, k) for k in (PARETO_SET, *results.get("versus_sets", {})))


def versus_section(results: Mapping[str, Any], set_key: str = PARETO_SET) -> str:
    """The reference minus each variant per length (recall, adherence: Welch over seeds, or paired), the
    variant's cost over the reference's, and the plain sentence at the longest length, on
    ``set_key``'s scores."""
    v = versus_of(results, set_key)
    if not v.get("variants"):
        return ""
    where, suffix = ("", "") if set_key == PARETO_SET else (f" on {set_key}", "-" + set_key.replace("_", "-"))
    reference = v["reference"]
    head = ["variant", "length"] + [f"{reference} − variant: {m}" for m in v["metrics"]] + [
        f"ms per chunk / {reference}'s"]
    rows = []
    for variant, per_length in v["variants"].items():
        for length, row in per_length.items():
            cells = []
            for metric in v["metrics"]:
                d = SeedDifference.from_json(row[metric]) if metric in row else None
                css = {"ahead": "ok", "behind": "error"}.get(d.verdict, "") if d else ""
                paired = " (paired)" if d and d.paired else ""
                cells.append(f'<span class="{css}">{esc(d.text())} {esc(d.verdict)}{paired}</span>' if d
                             else '<span class="muted">-</span>')
            ratio = row.get("cost_ratio")
            rows.append([esc(variant), esc(length), *cells,
                         esc(f"{ratio:.2f}") if ratio is not None else '<span class="muted">per clip</span>'])
    sentences = "".join(f"<li>{esc(line)}</li>" for line in versus_sentences(results, set_key))
    return (f"<h3>{esc(reference)} against each variant{esc(where)}</h3>"
            f'<ul id="compare-statements{esc(suffix)}">{sentences}</ul>'
            + table(head, rows, table_id=f"compare-versus{suffix}", raw_cells=True)
            + f"<p class=\"muted\">{esc(reference)}'s mean minus the variant's over training seeds, "
            "[95% Welch interval] (each student's own spread over its seeds), or (paired) the paired "
            "t interval of the per-seed differences when the two students share a trained stage on every "
            "seed (a stage-2 variant starts from the reference's own S2DiT-KD); ahead / behind: the "
            "interval is above / below 0, not separated: it holds 0.</p>")


TEACHER_TITLES = {"teacher_fullstep": "full-step Euler (the reference)"}


def _teacher_title(name: str) -> str:
    """``teacher_4step_unipc`` -> "4-step UniPC"; the reference says so."""
    if name in TEACHER_TITLES:
        return TEACHER_TITLES[name]
    steps, _, solver = name.removeprefix("teacher_").partition("_")
    return f"{steps.replace('step', '-step')} {STRONG_SOLVER_TITLE if solver == STRONG_SOLVER else solver or 'Euler'}"


def _value(row: Mapping[str, Any], key: str, digits: int) -> str:
    """A teacher row's figure, with its Wilson interval where the oracle gives one."""
    if not isinstance(row.get(key), (int, float)):
        return '<span class="muted">-</span>'
    ci = row.get(f"{key}_ci")
    return esc(f"{row[key]:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else ""))


def teacher_table(results: Mapping[str, Any], set_key: str = "held_out_seeds") -> str:
    """The teacher's own samplers on the same noise as every cell: reference points with no
    training (whole clip, not streamed: no per-chunk cost)."""
    rows = []
    for length, samplers in (results.get("teacher") or {}).get(set_key, {}).items():
        for name, row in samplers.items():
            gate = ("reference" if row.get("role") == "reference" else "pass" if row["gate"]["passed"]
                    else "fail: " + ", ".join(row["gate"]["failed"]))
            rows.append([esc(_teacher_title(name)), esc(length), esc(gate),
                         *[_value(row, k, d) for k, _, d in SCORE_COLUMNS]])
    if not rows:
        return ""
    return ("<h3>The teacher's own samplers (no training)</h3>"
            + table(["teacher sampler", "length", "gate", *[label for _, label, _ in SCORE_COLUMNS]],
                    rows, table_id="compare-teacher", raw_cells=True)
            + '<p class="muted">The analytic teacher on the same held-out noise as every cell, the whole '
            "clip at once (not streamed, so no per-chunk cost): the full-step sampler every row is "
            "gated against, and its few-step samplers with no training at all, Euler and a strong "
            "solver (diffusers' UniPC). One sample set, so [95% Wilson intervals] over samples, not "
            "seeds.</p>")


def _gate(row: Mapping[str, Any]) -> str:
    k, n = row["gate_passes"], row["n"]
    return f'<span class="{"ok" if k == n else "error" if k == 0 else ""}">{k}/{n}</span>'


def _videos(results: Mapping[str, Any], variant: str, link_prefix: str) -> str:
    links = [f'<a href="{esc(link_prefix + v)}">{i + 1}</a>'
             for c in results["cells"] if c["variant"] == variant for i, v in enumerate(c.get("samples", []))]
    return " ".join(links) or '<span class="muted">-</span>'


def summary_table(results: Mapping[str, Any], set_key: str, *, link_prefix: str, cost: bool) -> str:
    """One row per variant and length: seeds, gate passes k/n, the oracle's figures, and (for
    the held-out seeds) latency, GFLOPs per chunk, training wall time and videos."""
    front = set((results.get("pareto") or {}).get("front", []))
    head = ["variant", "length", "seeds", "gate passes"] + [label for _, label, _ in SCORE_COLUMNS]
    if cost:
        head += ["frames per chunk", "ms per chunk", "GFLOPs per chunk", "train wall (min)", "videos"]
    rows = []
    for variant, s in results.get("summary", {}).items():
        for i, (length, row) in enumerate(s["sets"].get(set_key, {}).items()):
            name = esc(variant) + (" \u2605" if variant in front and cost else "")
            cells = [name, esc(length), esc(row["n"]), _gate(row)]
            cells += [_mean(row["metrics"].get(k), d) for k, _, d in SCORE_COLUMNS]
            if cost:
                c = s["cost"][length]
                wall = ("\u2265 " if s["resumed"] else "") + _mean(s["train_s"], 1, 1 / 60)
                frames = s.get("chunk", {}).get("frames")
                unit = ("-" if frames is None else str(frames)) + (" (whole clip)" if _whole_clip(
                    results["summary"], variant) else "")
                cells += [esc(unit), _mean(c["last5_s"], 2, 1e3), _mean(c["gflops"], 4), wall,
                          _videos(results, variant, link_prefix) if i == 0 else ""]
            rows.append(cells)
    return table(head, rows, table_id=f"compare-{set_key.replace('_', '-')}", raw_cells=True)


def classes_table(results: Mapping[str, Any], set_key: str) -> str:
    """Per variant, length and unseen class: its adherence over seeds, which attribute went
    wrong how often, and the trained neighbour it was made as most ("" when none was named)."""
    rows = []
    for variant, s in results.get("summary", {}).items():
        for length, row in s["sets"].get(set_key, {}).items():
            for c in row.get("classes", []):
                wrong = ", ".join(f"{k} {v:.2f}" for k, v in c["wrong"].items() if v > 0) or "-"
                made = f"{c['neighbour']} ({c['neighbour_share']:.2f})" if c["neighbour"] else "-"
                pinned = "; ".join(c.get("pinned_by", [])) or "-"
                rows.append([esc(variant), esc(length), esc(c["class"]), _mean(c["adherence"]), esc(wrong),
                             esc(made), esc(pinned)])
    if not rows:
        return ""
    return (table(["variant", "length", "class", "adherence", "wrong (share of samples)",
                   "made as the trained neighbour (share)", "pinned in training by"], rows,
                  table_id=f"compare-classes-{set_key.replace('_', '-')}", raw_cells=True)
            + '<p class="muted">Each unseen class over the seeds: the attribute a wrong sample got wrong, '
              "the trained class it was made as most often (mean shares over seeds), and the trained "
              "classes that alone carry a pair of its attributes in training (a shortcut the split "
              "leaves: corpus split \"pairs_varied\" leaves none).</p>")


def seeds_table(results: Mapping[str, Any], *, link_prefix: str) -> str:
    """Each cell: its gate verdict and recall (or adherence) per length, cost, train time."""
    lengths = [f"{m}x" for m in results["lengths"]]
    y_key = (results.get("pareto") or {}).get("y", "recall")
    summary = results.get("summary", {})
    head = ["variant", "seed"] + [f"gate {m}" for m in lengths] + [f"{LABELS.get(y_key, y_key)} {m}" for m in lengths]
    head += ["ms per chunk " + lengths[-1], "train wall (min)", "scores"]
    rows = []
    for c in results["cells"]:
        held = c["scores"].get("held_out_seeds", {})
        gates = [("pass" if held[m]["gate"]["passed"] else "fail: " + ", ".join(held[m]["gate"]["failed"]))
                 if m in held else "-" for m in lengths]
        recalls = [f"{held[m][y_key]:.3f}" if y_key in held.get(m, {}) else "-" for m in lengths]
        wall = ("\u2265 " if c["resumed"] else "") + f"{c['train_seconds']['total'] / 60:.1f}"
        wall += "".join(f" ({stage.upper()}: {owner.split('/')[0]}'s)" for stage, owner in c.get("shared", {}).items())
        link = f'<a href="{esc(link_prefix + c["folder"] + "/" + EVAL)}">{esc(EVAL)}</a>'
        rows.append([esc(c["variant"]), esc(c["seed"]), *map(esc, gates), *map(esc, recalls),
                     esc(f"{c['cost'][lengths[-1]]['last5_s'] * 1e3:.2f}{_per(summary, c['variant'])}"),
                     esc(wall), link])
    return table(head, rows, table_id="compare-seeds", raw_cells=True)


def _overrides(overrides: Mapping[str, Any]) -> str:
    """``dim = 88, train_ar.causal_steps = 0``: model keys bare, a recipe table's keys under it."""
    return ", ".join(", ".join(f"{k}.{key} = {val}" for key, val in v.items()) if isinstance(v, Mapping)
                     else f"{k} = {v}" for k, v in overrides.items())


def variants_table(results: Mapping[str, Any]) -> str:
    rows = []
    for name, v in results.get("variants", {}).items():
        model = v.get("model") or v.get("train_model") or {}
        said = _overrides(v["overrides"]) or "(the run's model and recipes)"
        if v.get("same_as"):
            said += f" (the same students as {v['same_as']}: trained once, its cells)"
        rows.append([esc(name), esc(said),
                     esc(" / ".join(model.get("layout", []))), esc(model.get("dim", "")),
                     esc("unbounded" if model.get("ssa_window") is None else model["ssa_window"]),
                     esc(model.get("ssa_sink", False))])
    return table(["variant", "overrides ([train.model], or [table] key)", "layout", "dim", "ssa_window", "ssa_sink"],
                 rows, table_id="compare-variants", raw_cells=True)


def _scored_as(results: Mapping[str, Any]) -> str:
    """``[compare] guidance``, ``unseen`` and ``lcha_window`` when not at their defaults
    (results.json has them then)."""
    out = f", guidance {results['guidance']:g}" if "guidance" in results else ""
    out += f", LCHA sums windowed ({results['lcha_window']})" if "lcha_window" in results else ""
    return out + (f", unseen classes: the {results['unseen']} subset" if "unseen" in results else "")


def _unseen_title(results: Mapping[str, Any], set_key: str) -> str:
    if set_key == UNSEEN_KEYS["validation"]:
        return ("Unseen attribute combinations, validation subset (for recipe decisions: never a "
                "reported figure; never gated)")
    subset = ", report subset" if results.get("unseen") == "report" else ""
    return f"Unseen attribute combinations{subset} (reported apart, never gated)"


def comparison_html(results: Mapping[str, Any] | None, *, link_prefix: str = "") -> str:
    """The page's body; ``link_prefix`` leads from where the HTML is to the compare folder."""
    if not results or not results.get("cells"):
        return pending("no comparison yet: a run config with a [compare] section "
                       "(configs/compare.toml) trains one")
    setup = results.get("cost_setup", {})
    p = results.get("pareto") or {}
    note = (f"Every figure is the mean over training seeds {results['seeds']} \u00b1 the 95% t "
            f"half-width of the seeds' spread ({results['per_class']} held-out samples per class "
            f"per seed, {results['noise']} noise{_scored_as(results)}). Latency: mean seconds of the "
            f"last 5 chunks of a "
            f"stream (median of {setup.get('latency_repeats')} passes, batch "
            f"{setup.get('latency_batch')}, {setup.get('torch_threads')} torch threads, measured in "
            f"one process after all training); GFLOPs: one chunk at the clip's end for one stream "
            f"(torch's FlopCounterMode: matmuls, convolutions, attention); a chunk is the frames per "
            f"chunk the table says. \u2605: on the Pareto "
            f"front at {p.get('length')}. \u2265: a training was interrupted, its wall time is a "
            "lower bound. A stage another variant's cell of the same seed trained with the same "
            "recipe (a stage-2 variant's S2DiT-KD: \"KD: s2dit's\" in the seeds' table) is trained "
            "once and counted in both variants' wall time.")
    body = (pareto_plot(results) + f'<p class="muted">{esc(note)}</p>' + versus_sections(results)
            + "<h3>Held-out seeds of the trained classes</h3>"
            + summary_table(results, "held_out_seeds", link_prefix=link_prefix, cost=True)
            + teacher_table(results))
    for set_key in dict.fromkeys(UNSEEN_KEYS.values()):
        if any(set_key in s["sets"] for s in results.get("summary", {}).values()):
            body += (f"<h3>{esc(_unseen_title(results, set_key))}</h3>"
                     + summary_table(results, set_key, link_prefix=link_prefix, cost=False)
                     + classes_table(results, set_key))
    body += "<h3>Each seed</h3>" + seeds_table(results, link_prefix=link_prefix)
    body += "<h3>Variants</h3>" + variants_table(results)
    body += (f'<p class="muted">cache {esc(results["cache"])} (generation {esc(results["generation"])}); '
             f'<a href="{esc(link_prefix + "results.json")}">results.json</a> holds every figure, the '
             "resolved recipes and variants.</p>")
    return body


def write_page(results: Mapping[str, Any], url: str) -> str:
    """RUN/compare/index.html (links relative to the compare folder it sits in)."""
    header = (f"<h1>Students compared</h1><p class=\"muted\">{len(results.get('variants', {}))} variants "
              f"\u00d7 seeds {esc(results.get('seeds'))}, written {esc(results.get('written'))}</p>")
    page = document("s2dit: students compared", header + comparison_html(results))
    with atomic_output(url) as path, open(path, "w", encoding="utf-8") as handle:
        handle.write(page)
    return url
