"""Stage corpus: the prompts the teacher caches, as a file in the run folder.

kind = "analytic": the analytic teacher's attribute classes, ``train_classes`` of them chosen
by ``seed`` (the others held out as unseen combinations) as ``split`` says ("random", the
default; "pairs_seen": every attribute pair of a held-out class is trained; "pairs_varied":
each with two values of the third attribute, so none is pinned by the other two, see
teacher_jobs.analytic_corpus); "inline": ``prompts = [...]``;
"file": a corpus at ``source`` (.txt, .jsonl or .parquet, any fsspec URL) copied in."""

from __future__ import annotations

import posixpath
from typing import Any

import fsspec

from cache_schema.words import count
from teacher_jobs.analytic_corpus import SPLITS, split_classes, split_shortcuts, write_corpus
from teacher_jobs.corpus import load_corpus

from ..config import RunConfig, RunConfigError, refuse_unknown_keys
from ..registry import register_graph_stage
from ..stage import Stage, StageContext
from ..state_schema import PATH, STRS

KEYS = {"analytic": {"kind", "train_classes", "seed", "split"}, "inline": {"kind", "prompts", "seed"},
        "file": {"kind", "source", "seed"}}
SAMPLE_PROMPTS = 8  # prompts recorded for the sample stage's default
TRAIN_CLASSES = 12  # kind = "analytic": classes trained unless ``train_classes`` says


def _section(config: RunConfig) -> dict[str, Any]:
    section = config.section("corpus")
    kind = section.setdefault("kind", "analytic")
    if kind not in KEYS:
        raise ValueError(f"[corpus] kind must be one of {sorted(KEYS)}, got {kind!r}")
    try:
        refuse_unknown_keys("corpus", section, KEYS[kind])
    except RunConfigError as exc:  # the keys depend on the kind: say which
        raise RunConfigError(f"{exc} (for kind = {kind!r})") from None
    if section.get("split", "random") not in SPLITS:  # before any stage runs
        raise RunConfigError(f"[corpus] split must be one of {list(SPLITS)}, got {section['split']!r}")
    return section


def _source_checksum(ctx: StageContext) -> dict[str, Any]:
    section = _section(ctx.config)
    if section["kind"] != "file":
        return {}
    fs, path = fsspec.core.url_to_fs(section["source"])
    if not fs.exists(path):
        raise FileNotFoundError(f"[corpus] source {section['source']} does not exist")
    return {"source_ukey": fs.ukey(path)}  # changes when the file does


def run(ctx: StageContext) -> dict[str, Any]:
    section = _section(ctx.config)
    kind, out = section["kind"], ctx.path("prompts.txt")
    held_out: list[str] = []
    if kind == "analytic":
        prompts, held_out = split_classes(train_classes=section.get("train_classes", TRAIN_CLASSES),
                                          seed=section.get("seed", 0),
                                          split=section.get("split", "random"))
        write_corpus(out, prompts)
    elif kind == "inline":
        prompts = section.get("prompts")
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("[corpus] kind = 'inline' needs prompts = ['...', ...]")
        write_corpus(out, list(prompts))
    else:
        source = section.get("source")
        if not source:
            raise ValueError("[corpus] kind = 'file' needs source = URL of a .txt/.jsonl/.parquet")
        out = ctx.path("prompts" + posixpath.splitext(source)[1])
        with fsspec.open(source, "rb") as src, fsspec.open(out, "wb") as dst:
            dst.write(src.read())
        prompts = list(dict.fromkeys(e.prompt for e in load_corpus(out)[0]))
    ctx.console.print(f"{count(len(prompts), 'prompt')} -> {out}"
                      + (f"; {count(len(held_out), 'combination')} held out" if held_out else ""))
    shortcuts = split_shortcuts(prompts, held_out) if held_out else {}
    if shortcuts:
        ctx.console.print(_shortcut_warning(shortcuts, len(held_out)))
    return {"prompts": out, "kind": kind, "count": len(prompts), "held_out": len(held_out),
            "sample_prompts": prompts[:SAMPLE_PROMPTS], "pinned_held_out": len(shortcuts)}


def _shortcut_warning(shortcuts: dict[str, list[str]], held: int) -> str:
    example, pinned_by = next(iter(shortcuts.items()))
    return (f"[yellow]{len(shortcuts)} of the {held} held-out combinations are pinned in training[/]: "
            f"two of their attributes come with one trained class only (e.g. '{example}': "
            + ", ".join(f"'{p}'" for p in pinned_by)
            + "), so their scores also say which shortcut a training seed took; "
              "[corpus] split = \"pairs_varied\" leaves none")


def _present(ctx: StageContext, outputs: dict[str, Any]) -> bool:
    fs, path = fsspec.core.url_to_fs(outputs["prompts"])
    return fs.exists(path)


STAGE = Stage(name="corpus", title="the prompts", section="corpus", run=run, seeded=True,
              artefact="prompts.txt",
              writes=("prompts.txt", "prompts.jsonl", "prompts.parquet"),
              extra_inputs=_source_checksum, still_there=_present, check=_section,
              recorded={"prompts": PATH, "sample_prompts": STRS})
register_graph_stage(STAGE, order=10)
