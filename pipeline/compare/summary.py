"""A grid's cells summarised per variant over its training seeds, and its Pareto front.

``seed_summary`` is the one aggregation of oracle scores over seeds (gate passes k/n, each
metric's mean with its 95% t half-width); the comparison page and bench/bench_memory.py use it.

``versus``: the grid's reference (its first variant: s2dit in configs/compare.toml, the one the
matched variants are timed against) minus every other variant, per length, in recall and
adherence on the held-out seeds, each with its Welch interval over the training seeds (paired
seed by seed when the two share a trained stage: a stage-2 variant and s2dit), and the
variant's per-chunk latency over the reference's: the plain statement "does S2DiT beat X at equal
cost at 4x, and by how much" read off the grid. ``versus_sets``: the same on every other set the
cells were scored on (the unseen combinations, or their report or validation subset), where a
recipe for unseen combinations is judged (configs/unseen_report.toml).

A variant's chunk (``chunk_of``) is read from its cost measurement: a stream of a clip m times
the trained length has m * F / c chunks of c latent frames, so a variant with one chunk per
trained length samples the whole clip at once (bidirectional_dmd: ``[train_ar] chunk_frames``
= the clip's latent frames). Its "per-chunk" cost is per whole clip and nothing of the clip
exists before it is done: it is kept off the Pareto plane of streaming students (``pareto``'s
``apart``), whose x is the latency of a chunk of a few frames.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .stats import SeedDifference, paired_difference, pareto_front, seed_difference, seed_mean

METRICS = ("adherence", "recall", "branch_rate", "mode_tv", "amplitude_bias", "ghost_energy",
           "dispersion_ratio", "coverage", "contrast")
COST_KEYS = ("last5_s", "mean_s", "first5_s", "flat_ratio", "gflops")
PARETO_SET = "held_out_seeds"
VERSUS_METRICS = ("recall", "adherence")


def seed_summary(scores: Sequence[Mapping[str, Any]], keys: Sequence[str] = METRICS) -> dict[str, Any]:
    """One oracle score dict per training seed -> ``n``, ``gate_passes`` (seeds whose scores
    pass the gate) and ``metrics``: key -> SeedMean, for the keys every seed has."""
    metrics = {k: seed_mean([s[k] for s in scores]) for k in keys
               if scores and all(isinstance(s.get(k), (int, float)) for s in scores)}
    return {"n": len(scores), "gate_passes": sum(bool(s.get("gate", {}).get("passed")) for s in scores),
            "metrics": metrics}


def _json(summary: dict[str, Any]) -> dict[str, Any]:
    return {**summary, "metrics": {k: v.to_json() for k, v in summary["metrics"].items()}}


def class_summary(scores: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per unseen class, over the seeds' named errors (eval_unseen's ``errors``): adherence
    (SeedMean json), each attribute's wrong share (mean over seeds) and the trained neighbour the
    class was made as most often (its mean share), the trained classes pinning a pair of it
    (``pinned_by``, the split's); [] unless every seed named them."""
    if not scores or not all(s.get("errors") for s in scores):
        return []
    out = []
    for i, first in enumerate(scores[0]["errors"]):
        rows = [s["errors"][i] for s in scores]
        shares: dict[str, float] = {}
        for r in rows:
            if r.get("neighbour"):
                shares[r["neighbour"]] = shares.get(r["neighbour"], 0.0) + r["neighbour_share"]
        neighbour = max(shares, key=shares.get) if shares else None
        out.append({"class": first["class"], "adherence": seed_mean([r["adherence"] for r in rows]).to_json(),
                    "wrong": {k: sum(r["wrong"][k] for r in rows) / len(rows) for k in first["wrong"]},
                    "neighbour": neighbour,
                    "neighbour_share": shares[neighbour] / len(rows) if neighbour else 0.0,
                    "pinned_by": first.get("pinned_by", [])})  # the split's: the same every seed
    return out


def summarise_grid(results: Mapping[str, Any]) -> dict[str, Any]:
    """``summary`` (per variant: seeds, train seconds, scores per set and length, cost per
    length, each over seeds) and ``pareto`` (at the longest length: x = the per-chunk latency,
    y = recall, or adherence for a task without recall; the variants on the front)."""
    lengths = [f"{m}x" for m in results["lengths"]]
    summary: dict[str, Any] = {}
    for variant in results["variants"]:
        cells = sorted((c for c in results["cells"] if c["variant"] == variant), key=lambda c: c["seed"])
        if not cells:
            continue
        sets = {}
        for set_key in dict.fromkeys(k for c in cells for k in c["scores"]):
            sets[set_key] = {}
            for m in lengths:
                rows = [c["scores"].get(set_key, {}).get(m) for c in cells]
                if all(rows):  # every seed scored it
                    named = class_summary(rows)  # an unseen set's classes
                    sets[set_key][m] = {**_json(seed_summary(rows)), **({"classes": named} if named else {})}
        cost = {m: {k: seed_mean([c["cost"][m][k] for c in cells]).to_json() for k in COST_KEYS}
                for m in lengths}
        summary[variant] = {"seeds": [c["seed"] for c in cells], "chunk": chunk_of(results, variant, cells),
                            "train_s": seed_mean([c["train_seconds"]["total"] for c in cells]).to_json(),
                            "resumed": any(c["resumed"] for c in cells), "sets": sets, "cost": cost}
    others = dict.fromkeys(k for s in summary.values() for k in s["sets"] if k != PARETO_SET)
    return {"summary": summary, "pareto": pareto(summary, lengths[-1] if lengths else "1x"),
            "versus": versus(results, summary),
            "versus_sets": {k: v for k in others if (v := versus(results, summary, k)).get("variants")}}


def chunk_of(results: Mapping[str, Any], variant: str, cells: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``frames``: latent frames per chunk of the variant's scored student (None when the
    results do not tell), ``whole_clip``: one chunk is the whole trained clip (module docstring)."""
    m = results["lengths"][0] if results.get("lengths") else 1
    chunks = cells[0].get("cost", {}).get(f"{m}x", {}).get("chunks") if cells else None
    if not chunks:
        return {"frames": None, "whole_clip": False}
    v = results.get("variants", {}).get(variant, {})
    clip = (v.get("model") or v.get("train_model") or {}).get("latent_frames")
    return {"frames": clip * m // chunks if clip else None, "whole_clip": chunks == m}


def pareto(summary: Mapping[str, Any], length: str) -> dict[str, Any]:
    """The cost-quality plane at ``length``: each variant's (latency, quality) means and the
    front (lowest latency for its quality); ``apart``: the variants left off it, whose chunk is
    the whole clip (their cost is not a streaming chunk's)."""
    apart = [v for v, s in summary.items() if s.get("chunk", {}).get("whole_clip")]
    rows = {v: s["sets"].get(PARETO_SET, {}).get(length) for v, s in summary.items() if v not in apart}
    rows = {v: r for v, r in rows.items() if r}
    y_key = "recall" if rows and all("recall" in r["metrics"] for r in rows.values()) else "adherence"
    points = {v: (summary[v]["cost"][length]["last5_s"]["mean"], r["metrics"][y_key]["mean"])
              for v, r in rows.items() if y_key in r["metrics"]}
    return {"length": length, "set": PARETO_SET, "x": "last5_s", "y": y_key,
            "points": {v: list(p) for v, p in points.items()}, "front": pareto_front(points),
            "apart": apart}


def _cells(results: Mapping[str, Any], variant: str) -> list[Mapping[str, Any]]:
    return sorted((c for c in results["cells"] if c["variant"] == variant), key=lambda c: c["seed"])


def shares_a_stage(results: Mapping[str, Any], a: str, b: str) -> bool:
    """Whether the cells of ``a`` and ``b`` have the same seeds and, seed by seed, a trained stage
    in common (one borrowed it from the other, or both from a third: the cells' ``shared``)."""
    ca, cb = _cells(results, a), _cells(results, b)
    if not ca or [c["seed"] for c in ca] != [c["seed"] for c in cb]:
        return False

    def common(x: Mapping[str, Any], y: Mapping[str, Any]) -> bool:
        sx, sy = x.get("shared", {}), y.get("shared", {})
        return (f"{x['variant']}/seed{x['seed']}" in sy.values() or f"{y['variant']}/seed{y['seed']}" in sx.values()
                or bool(set(sx.items()) & set(sy.items())))

    return all(common(x, y) for x, y in zip(ca, cb, strict=True))


def versus(results: Mapping[str, Any], summary: Mapping[str, Any],
           set_key: str = PARETO_SET) -> dict[str, Any]:
    """The reference (the first variant with cells) against every other variant on ``set_key``'s
    scores: per length,
    ``VERSUS_METRICS`` as reference minus variant (SeedDifference json: Welch over seeds, or paired
    seed by seed when the two share a trained stage on every seed, ``shares_a_stage``) and
    ``cost_ratio`` (the variant's mean last-5-chunk latency over the reference's; None for a
    whole-clip variant, whose cost is per clip). A twin of the reference (``same_as``) is the
    same students: left out."""
    names = [v for v in results.get("variants", {}) if v in summary]
    if not names:
        return {}
    reference = names[0]
    lengths = [f"{m}x" for m in results["lengths"]]

    def values(variant: str, length: str, metric: str) -> list[float] | None:
        rows = [c["scores"].get(set_key, {}).get(length, {}).get(metric) for c in _cells(results, variant)]
        return rows if rows and all(isinstance(x, (int, float)) for x in rows) else None

    out: dict[str, Any] = {}
    for variant in names[1:]:
        if results["variants"][variant].get("same_as") == reference:
            continue
        difference = paired_difference if shares_a_stage(results, reference, variant) else seed_difference
        per_length = {}
        for length in lengths:
            row: dict[str, Any] = {}
            for metric in VERSUS_METRICS:
                a, b = values(reference, length, metric), values(variant, length, metric)
                if a and b:
                    row[metric] = difference(a, b).to_json()
            if not row:
                continue
            costs = [summary[v]["cost"].get(length, {}).get("last5_s", {}).get("mean") for v in (reference, variant)]
            whole = summary[variant].get("chunk", {}).get("whole_clip")
            row["cost_ratio"] = None if whole or not all(costs) else costs[1] / costs[0]
            per_length[length] = row
        if per_length:
            out[variant] = per_length
    return {"reference": reference, "set": set_key, "metrics": list(VERSUS_METRICS), "variants": out}


def _versus_sentence(results: Mapping[str, Any], v: Mapping[str, Any], variant: str, length: str) -> str:
    """``s2dit against full_attention at 4x: recall 0.900 against 0.600, ahead by 0.300 (95%
    Welch interval +0.277 to +0.323, 3 and 3 seeds), full_attention at 1.02x s2dit's per-chunk
    latency.``: the first metric the row has (recall, else adherence). ``v``: a ``versus`` of
    ``results``; on a set other than the held-out seeds the sentence names it ("... at 1x on
    unseen_combinations: ...")."""
    reference, row = v["reference"], v["variants"][variant][length]
    metric = next(m for m in v["metrics"] if m in row)
    d = SeedDifference.from_json(row[metric])
    means = [results["summary"][name]["sets"][v["set"]][length]["metrics"][metric]["mean"]
             for name in (reference, variant)]
    if d.half is None:
        said = f"{d.diff:+.3f}, one seed: no interval"
    else:
        said = (f"{d.verdict} by {abs(d.diff):.3f}" if d.verdict in ("ahead", "behind")
                else f"not separated: {d.diff:+.3f}")
        seeds = (f"{d.n_a} seeds paired by their shared stage" if d.paired else f"{d.n_a} and {d.n_b} seeds")
        said += f" (95% {d.test} interval {d.diff - d.half:+.3f} to {d.diff + d.half:+.3f}, {seeds})"
    ratio = row.get("cost_ratio")
    cost = (f", {variant} at {ratio:.2f}x {reference}'s per-chunk latency" if ratio is not None
            else f", {variant}'s cost is per clip (not a streamed chunk's)")
    where = "" if v["set"] == PARETO_SET else f" on {v['set']}"
    return (f"{reference} against {variant} at {length}{where}: {metric} {means[0]:.3f} against {means[1]:.3f}, "
            f"{said}{cost}.")


def versus_of(results: Mapping[str, Any], set_key: str = PARETO_SET) -> Mapping[str, Any]:
    """The grid's ``versus`` on ``set_key``'s scores ({} if none)."""
    by_set = results.get("versus_sets", {})
    return (results.get("versus") if set_key == PARETO_SET else by_set.get(set_key)) or {}


def versus_sentences(results: Mapping[str, Any], set_key: str = PARETO_SET) -> list[str]:
    """The plain sentence of every variant against the reference at the longest length, on
    ``set_key``'s scores."""
    v = versus_of(results, set_key)
    longest = f"{results['lengths'][-1]}x" if results.get("lengths") else None
    return [_versus_sentence(results, v, variant, longest)
            for variant, per_length in v.get("variants", {}).items() if longest in per_length]
