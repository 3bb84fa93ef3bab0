"""The cache card: what a teacher cache holds, in one HTML section.

Summary (generations, samples, shards, bytes, encoding, fingerprint, teacher, layout), the
prompts the job rejected and why (kept in the manifest by the cache job), and with ``detail``:
a sample of prompts with their x0 decoded by the cache's own teacher side, per-step mean/std
of the stored states and velocities, and the shard size histogram.
"""

from __future__ import annotations

import datetime
from typing import Any

import numpy as np

from cache_schema import (
    CacheError,
    CacheReader,
    list_generations,
    open_store,
    read_manifest,
    split_ref,
)
from teacher_jobs.preview import frame_strip
from teacher_jobs.teachers import open_sampling_side

from .assets import Assets
from .html import esc, fmt, human_bytes, key_values, pending, table
from .svg import histogram, line_chart

MAX_STRIP_FRAMES = 9  # frames shown per x0 preview (a Wan clip is sub-sampled to these)


def _generations(base: str) -> list[list[Any]]:
    store = open_store(base)
    rows = []
    for gen in list_generations(store):
        try:
            m = read_manifest(store, gen)
        except CacheError as exc:  # a corrupt generation is shown, not fatal to the card
            rows.append([gen, f"unreadable: {exc}", "", "", "", "", ""])
            continue
        created = datetime.datetime.fromtimestamp(m.created_at, datetime.UTC).isoformat(timespec="seconds")
        rows.append([gen, m.operation, m.num_samples, len(m.shards), m.encoding,
                     human_bytes(m.total_bytes), created])
    return rows


def rejections(extra: dict[str, Any]) -> list[dict[str, Any]]:
    """Corpus lines and prompts the cache job refused: {line, text, reason, where}."""
    job = extra.get("job", {}) if isinstance(extra, dict) else {}
    out = [{**r, "where": "corpus"} for r in job.get("corpus_rejections", [])]
    out += [{**r, "where": "teacher"} for r in job.get("unit_rejections", [])]
    return out


def _summary(reader: CacheReader, base: str) -> str:
    m = reader.manifest
    fp = m.fingerprint
    teacher_cfg = fp.get("config", {}) if isinstance(fp.get("config"), dict) else {}
    layout = m.layout
    pairs = [("cache", base), ("generation", m.generation), ("operation", m.operation),
             ("samples", m.num_samples), ("shards", len(m.shards)), ("bytes", human_bytes(m.total_bytes)),
             ("encoding", m.encoding), ("fingerprint", m.fingerprint_digest), ("teacher", fp.get("teacher")),
             ("latent shape (C, F, H, W)", " x ".join(map(str, layout.latent_shape))),
             ("solver steps", layout.num_steps), ("stored steps", len(layout.keep_steps)),
             ("text", f"{layout.max_text_len} tokens x {layout.text_dim}"), ("half dtype", layout.half_dtype),
             ("global seed", fp.get("global_seed")), ("cache id", m.cache_id)]
    if teacher_cfg.get("guidance") is not None:
        pairs.append(("guidance", teacher_cfg.get("guidance")))
    return key_values(pairs, table_id="cache-summary")


def _rejections_html(extra: dict[str, Any]) -> str:
    rows = rejections(extra)
    if not rows:
        return "<h3>Rejected prompts</h3><p>none</p>"
    body = table(["where", "line", "prompt", "reason"],
                 [[r.get("where"), r.get("line", ""), r.get("text", ""), r.get("reason", "")] for r in rows[:200]],
                 table_id="cache-rejections")
    more = f"<p class=\"muted\">{len(rows) - 200} more not shown</p>" if len(rows) > 200 else ""
    return f"<h3>Rejected prompts ({len(rows)})</h3>{body}{more}"


def _previews(reader: CacheReader, assets: Assets, n_prompts: int) -> str:
    """The first stored sample of up to ``n_prompts`` distinct prompts, x0 decoded."""
    picked: dict[str, dict[str, Any]] = {}
    for i, rec in enumerate(reader.iter_records(fields=["prompt", "seed", "x0"])):
        picked.setdefault(rec["prompt"], rec)
        if len(picked) >= n_prompts or i >= 512:
            break
    if not picked:
        return pending("no samples stored yet")
    try:
        side = open_sampling_side(reader.fingerprint)
    except (ValueError, OSError, ImportError, RuntimeError) as exc:  # e.g. Wan weights not here
        return f'<p class="error">x0 previews unavailable: {esc(exc)}</p>'
    rows = []
    for k, rec in enumerate(picked.values()):
        frames = side.render(np.asarray(rec["x0"], dtype=np.float32)[None])[0]  # (F', H', W', 3)
        if len(frames) > MAX_STRIP_FRAMES:
            frames = frames[np.linspace(0, len(frames) - 1, MAX_STRIP_FRAMES).round().astype(int)]
        img = assets.image(f"cache_x0_{k}", frame_strip(frames[None]), alt=f"x0 of {rec['prompt']}")
        rows.append([esc(rec["prompt"]), esc(rec["seed"]), img])
    return ("<h3>Sample prompts and their x0 (decoded by the cache's teacher side)</h3>"
            + table(["prompt", "seed", "x0 frames"], rows, table_id="cache-previews", raw_cells=True))


def step_statistics(reader: CacheReader, max_samples: int = 256) -> dict[str, Any]:
    """Per stored step: mean and std of states, v_cond and v_uncond over up to
    ``max_samples`` samples (fp64), with the step's sigma."""
    names = ("states", "v_cond", "v_uncond")
    sums = {n: None for n in names}
    squares = {n: None for n in names}
    count, sigmas = 0, None
    for rec in reader.iter_records(fields=[*names, "sigmas"]):
        for n in names:
            x = np.asarray(rec[n], dtype=np.float64).reshape(len(rec[n]), -1)  # (S, C*F*H*W)
            s, q = x.mean(1), (x ** 2).mean(1)
            sums[n] = s if sums[n] is None else sums[n] + s
            squares[n] = q if squares[n] is None else squares[n] + q
        sigmas = np.asarray(rec["sigmas"], dtype=np.float64)
        count += 1
        if count >= max_samples:
            break
    if not count:
        return {"samples": 0}
    out: dict[str, Any] = {"samples": count, "steps": list(reader.layout.keep_steps),
                           "sigmas": sigmas.tolist()}
    for n in names:
        mean = sums[n] / count
        out[n] = {"mean": mean.tolist(), "std": np.sqrt(np.maximum(squares[n] / count - mean ** 2, 0)).tolist()}
    return out


def _statistics_html(stats: dict[str, Any]) -> str:
    if not stats.get("samples"):
        return pending("no samples stored yet")
    rows = []
    for i, step in enumerate(stats["steps"]):
        rows.append([step, stats["sigmas"][i], *(stats[n][k][i] for n in ("states", "v_cond", "v_uncond")
                                                  for k in ("mean", "std"))])
    charts = "".join(line_chart(f"{n}: std per stored step", {
        "std": list(zip(stats["steps"], stats[n]["std"])), "mean": list(zip(stats["steps"], stats[n]["mean"]))})
        for n in ("states", "v_cond", "v_uncond"))
    return (f"<h3>Stored states and velocities per step ({stats['samples']} samples)</h3>"
            f'<div class="charts">{charts}</div>'
            + table(["step", "sigma", "states mean", "states std", "v_cond mean", "v_cond std",
                     "v_uncond mean", "v_uncond std"], rows, table_id="cache-step-stats"))


def cache_card(cache_url: str, assets: Assets | None = None, *, detail: bool = True,
               preview_prompts: int = 6, stats_samples: int = 256) -> str:
    """The card's HTML; ``detail`` adds previews, per-step statistics and shard sizes."""
    base = split_ref(cache_url)[0]
    reader = CacheReader(cache_url)
    parts = [_summary(reader, base)]
    parts.append("<h3>Generations</h3>" + table(
        ["generation", "operation", "samples", "shards", "encoding", "bytes", "created (UTC)"],
        _generations(base), table_id="cache-generations"))
    parts.append(_rejections_html(reader.manifest.extra))
    if detail:
        if assets is not None:
            parts.append(_previews(reader, assets, preview_prompts))
        parts.append(_statistics_html(step_statistics(reader, stats_samples)))
        sizes = [s.bytes / 2**20 for s in reader.shards]
        parts.append("<h3>Shard sizes</h3>" + histogram(f"{len(sizes)} shards", sizes, unit=" MiB")
                     + f"<p class=\"muted\">{fmt(min(sizes, default=0))} to {fmt(max(sizes, default=0))} MiB</p>")
    return "".join(parts)
