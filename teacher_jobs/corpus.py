"""Prompt corpora on any fsspec URL: txt (one per line), jsonl and Parquet.

Entries are normalised and deduplicated by (normalised prompt, seed) in a stable order; bad
lines become rejected entries with their line number and reason.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import fsspec
import pyarrow.parquet as pq

from cache_schema.bounds import text_problem

from .prompts import normalise_prompt, validate_prompt


@dataclass(frozen=True, slots=True)
class Entry:
    line: int  # 1-based line (or row) in the corpus
    prompt: str  # normalised
    seed: int
    negative_prompt: str | None = None


@dataclass(frozen=True, slots=True)
class RejectedEntry:
    line: int
    text: str
    reason: str

    def to_json(self) -> dict:
        return {"line": self.line, "text": self.text[:200], "reason": self.reason}


def _raw_items(url: str) -> list[tuple[int, object]]:
    """(line, raw) pairs; raw is bytes (txt), a parsed dict (jsonl/parquet) or an error str."""
    try:
        with fsspec.open(url, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"prompt corpus {url} does not exist") from None
    lower = url.lower()
    if lower.endswith(".parquet"):
        table = pq.read_table(io.BytesIO(data))
        if "prompt" not in table.column_names:
            raise ValueError(f"Parquet corpus {url} needs a 'prompt' column (has {table.column_names})")
        return [(i + 1, row) for i, row in enumerate(table.to_pylist())]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if lower.endswith((".jsonl", ".json")):
        items: list[tuple[int, object]] = []
        for i, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
                items.append((i, obj if isinstance(obj, dict) else f"not a JSON object: {raw[:60]!r}"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                items.append((i, f"bad JSON line: {exc}"))
        return items
    return [(i, raw.rstrip(b"\r")) for i, raw in enumerate(lines, 1)]


INT64 = (-(2**63), 2**63 - 1)


def _seed_problem(seed: object) -> str | None:
    """Why ``seed`` is not an int64 seed (a JSON float with a fraction, a bool, a string, a
    number beyond int64 all are refused here, never after the shard is written)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, float)):
        return f"seed {seed!r} is not an integer"
    if isinstance(seed, float) and not seed.is_integer():
        return f"seed {seed!r} is not an integer"
    if not INT64[0] <= int(seed) <= INT64[1]:
        return f"seed {seed} is outside int64 [{INT64[0]}, {INT64[1]}]"
    return None


def _entry_problem(negative: object, seeds: list) -> str | None:
    if negative is not None and not isinstance(negative, str):
        return f"negative_prompt must be a string, got {type(negative).__name__}"
    if negative is not None and text_problem("negative_prompt", negative):
        return f"negative_prompt: {text_problem('negative_prompt', negative)}"
    if not seeds:
        return "'seed' is an empty list: no trajectory to record"
    for seed in seeds:
        problem = _seed_problem(seed)
        if problem:
            return problem
    return None


def require_entries(entries: list[Entry], rejected: list[RejectedEntry], url: str) -> None:
    """Refuse a corpus with no valid prompt before anything starts (no Ray actor, no empty
    generation a trainer would then fail on)."""
    if entries:
        return
    shown = "; ".join(f"line {r.line}: {r.reason}" for r in rejected[:3])
    raise ValueError(f"prompt corpus {url} holds no valid prompt"
                     + (f" ({len(rejected)} lines rejected: {shown})" if rejected else " (it is empty)")
                     + "; nothing to generate: give a corpus with at least one prompt")


def load_corpus(url: str, *, seeds_per_prompt: int = 1, max_tokens: int | None = None,
                count_tokens=None) -> tuple[list[Entry], list[RejectedEntry]]:
    """Valid entries in a stable order, and rejected lines.

    Seeds are emitted round-robin across prompts (seed 0 of every prompt, then seed 1, ...):
    a shard then mixes many prompts, so a loader's shuffle buffer of a few shards still yields
    varied batches (prompt-sorted shards made a trained student ignore its prompt, measured).
    """
    rows: list[tuple[int, str, list, str | None]] = []
    rejected: list[RejectedEntry] = []
    for line, raw in _raw_items(url):
        if isinstance(raw, str):
            rejected.append(RejectedEntry(line, "", raw))
            continue
        if isinstance(raw, dict):
            prompt, seeds, neg = raw.get("prompt"), raw.get("seed"), raw.get("negative_prompt")
            if prompt is None:
                rejected.append(RejectedEntry(line, json.dumps(raw)[:200], "no 'prompt' key"))
                continue
            if seeds is None:
                seeds = list(range(seeds_per_prompt))
            elif not isinstance(seeds, list):
                seeds = [seeds]
            problem = _entry_problem(neg, seeds)
            if problem:  # this line only: the rest of the corpus (and its unit) goes on
                rejected.append(RejectedEntry(line, json.dumps(raw, default=str)[:200], problem))
                continue
        else:
            prompt, seeds, neg = raw, list(range(seeds_per_prompt)), None
            if not raw.strip():
                continue  # blank lines in a txt corpus are layout, not prompts
        reason = validate_prompt(prompt, max_tokens=max_tokens, count_tokens=count_tokens)
        if reason:
            shown = prompt.decode("utf-8", "replace") if isinstance(prompt, bytes) else str(prompt)
            rejected.append(RejectedEntry(line, shown, reason))
            continue
        text = normalise_prompt(prompt.decode("utf-8") if isinstance(prompt, bytes) else prompt)
        rows.append((line, text, seeds, neg))
    entries: list[Entry] = []
    seen: set[tuple[str, int]] = set()
    for k in range(max((len(r[2]) for r in rows), default=0)):
        for line, text, seeds, neg in rows:
            if k >= len(seeds):
                continue
            seed = int(seeds[k])  # checked by _entry_problem: an int64 integer
            if (text, seed) in seen:
                continue
            seen.add((text, seed))
            entries.append(Entry(line, text, seed, neg))
    return entries, rejected
