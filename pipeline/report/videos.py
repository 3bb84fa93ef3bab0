"""The videos of each stage side by side, for the same prompts from the same noise.

A teacher with an oracle (the analytic one): the teacher (full-step and few-step) and each
training stage's student (S2DiT-KD; S2DiT-AR streaming) on held-out seeds (noise drawn as the evaluation draws it), rendered by its
sampling side; each clip also as a frame strip (readable in a screenshot), naming the class its
latent is nearest to. Any other teacher (Wan): cached samples, the teacher's stored x0 next to
the students sampled from the same stored noise and text embedding, rendered by its sampling
side (the VAE).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cache_schema import CacheReader
from cache_schema.noise import batch_noise
from cache_schema.sample_id import make_sample_id
from pipeline.eval import HELD_OUT_SEED_BASE
from student_train.checkpoint import latest_checkpoint
from student_train.student import StudentCheckpoint
from student_train.text import pad_text
from teacher_jobs.preview import frame_strip
from teacher_jobs.sampler import sample_latents
from teacher_jobs.teachers import OracleSide, open_sampling_side

from .assets import Assets
from .html import esc, pending

# (model, run folder of its training stage): "S2DiT-KD", RUN/student
Students = Sequence[tuple[str, str]]


@dataclass
class Clip:
    label: str  # column: "teacher, 24-step", "S2DiT-KD, 4-step", ...
    x0: np.ndarray | None  # (N, C, F, H, W), or None with ``note`` (pending stage)
    note: str = ""


def _student_clip(name: str, student: StudentCheckpoint, noise: torch.Tensor, text: torch.Tensor,
                  mask: torch.Tensor) -> Clip:
    """A student's few-step clip, sampled as its stage samples (chunk by chunk or whole)."""
    sigmas = student.plan["schedule_sigmas"]
    x0 = student.sample(noise, text, mask, sigmas, use_step_size=True)
    how = " streaming" if student.streams else ""
    return Clip(f"{name}, {len(sigmas) - 1}-step{how} (step {student.step})", x0.float().numpy())


def stage_clips(cache_url: str, students: Students, prompts: list[str], side: OracleSide,
                notes: dict[str, str] | None = None) -> list[Clip]:
    """The oracle teacher's clips and each student's (``notes``: why a student has none)."""
    reader = CacheReader(cache_url)
    fingerprint, digest = reader.fingerprint, reader.manifest.fingerprint_digest
    teacher = side.oracle
    global_seed = fingerprint["global_seed"]
    seeds = [HELD_OUT_SEED_BASE + i for i in range(len(prompts))]
    ids = [make_sample_id(p, s, digest) for p, s in zip(prompts, seeds)]
    noise = torch.from_numpy(batch_noise(global_seed, ids, teacher.latent_shape))
    text = teacher.encode_prompts(prompts)
    clips = [Clip(f"teacher, {teacher.num_steps}-step",
                  sample_latents(teacher, prompts, seeds, global_seed=global_seed, fingerprint_digest=digest))]
    few = None
    for name, ckpt in ((name, latest_checkpoint(run)) for name, run in students):
        if ckpt is None:
            clips.append(Clip(name, None, (notes or {}).get(name, "pending: no checkpoint yet")))
            continue
        student = StudentCheckpoint.load(ckpt)
        sigmas = student.plan["schedule_sigmas"]
        few = len(sigmas) - 1
        clips.append(_student_clip(name, student, noise, text.emb, text.mask))
    if few is not None and few != teacher.num_steps:
        clips.insert(1, Clip(f"teacher, {few}-step",
                             sample_latents(side.at_steps(few), prompts, seeds, global_seed=global_seed,
                                            fingerprint_digest=digest)))
    return clips


def stage_videos_html(cache_url: str, students: Students, assets: Assets,
                      notes: dict[str, str] | None = None) -> str:
    """A grid: one row per prompt, one column per stage, each cell a video and a frame strip
    (a teacher with an oracle, which samples itself on held-out seeds)."""
    reader = CacheReader(cache_url)
    side = open_sampling_side(reader.fingerprint)
    if not isinstance(side, OracleSide):
        raise TypeError(f"the {side.kind} teacher has no oracle: show its cached samples instead")
    trained = sorted(set(reader.index().column("prompt").to_pylist()))
    picked = side.report_prompts(trained)
    if not picked:
        return pending("no prompts in the cache yet")
    clips = stage_clips(cache_url, students, [p for p, _ in picked], side, notes)
    encode = []  # (cell index, name, frames, title): the encodes run in parallel (ffmpeg processes)
    right = [0] * len(clips)
    cells = ['<div class="muted">prompt (held-out seed)</div>'] + [f"<div><b>{esc(c.label)}</b></div>" for c in clips]
    for i, (prompt, kind) in enumerate(picked):
        cells.append(f"<div>{esc(prompt)}<br><span class=\"muted\">{esc(kind)} class, seed "
                     f"{HELD_OUT_SEED_BASE + i}</span></div>")
        for j, clip in enumerate(clips):
            if clip.x0 is None:
                cells.append(f'<div class="pending">{esc(clip.note)}</div>')
                continue
            frames = side.render(clip.x0[i:i + 1])  # (1, F, H, W, 3)
            nearest = side.nearest_prompts(clip.x0[i:i + 1])[0]
            verdict = "right" if side.same_class(nearest, prompt) else "wrong"
            right[j] += verdict == "right"
            name = f"stage{j}_prompt{i}"
            strip = frame_strip(frames[:, :, ::4, ::4], gap=1)  # 4x blocks: a row of frames fits
            encode.append((len(cells), name, frames[0], f"{clip.label}: {prompt}"))
            cells.append(
                "<figure>{video}"
                f"{assets.image(name + '_strip', strip, alt=f'frames of {clip.label}: {prompt}')}"
                f"<figcaption>nearest class: {esc(nearest)} ({verdict})</figcaption></figure>")
    _encode_into(cells, encode, assets, side.fps)
    for j, clip in enumerate(clips):  # each column's header says how many of its clips are right
        if clip.x0 is not None:
            cells[1 + j] = (f"<div><b>{esc(clip.label)}</b><br><span class=\"muted\">{right[j]} of "
                            f"{len(picked)} nearest the prompt's class</span></div>")
    grid = (f'<div class="clips" style="grid-template-columns: 180px repeat({len(clips)}, auto)">'
            f'{"".join(cells)}</div>')
    return grid + f'<p class="muted">{esc(side.rendering_note())}</p>'


def cached_clips(reader: CacheReader, students: Students, n_prompts: int = 3,
                 notes: dict[str, str] | None = None) -> tuple[list[dict[str, Any]], list[Clip]]:
    """Any teacher: the first cached sample of ``n_prompts`` prompts (the teacher's x0) and each
    student sampled from that sample's stored noise and text embedding."""
    picked: dict[str, dict[str, Any]] = {}
    for i, rec in enumerate(reader.iter_records(fields=["prompt", "seed", "noise", "x0", "text_emb"])):
        picked.setdefault(rec["prompt"], rec)
        if len(picked) >= n_prompts or i >= 512:
            break
    records = list(picked.values())
    if not records:
        return [], []
    noise = torch.from_numpy(np.stack([r["noise"] for r in records]).astype(np.float32))
    text, mask = pad_text(records, reader.layout.max_text_len)
    clips = [Clip(f"teacher, {reader.layout.num_steps}-step (cached)",
                  np.stack([r["x0"] for r in records]).astype(np.float32))]
    for name, run in students:
        ckpt = latest_checkpoint(run)
        if ckpt is None:
            clips.append(Clip(name, None, (notes or {}).get(name, "pending: no checkpoint yet")))
            continue
        clips.append(_student_clip(name, StudentCheckpoint.load(ckpt), noise, text, mask))
    return records, clips


def cached_videos_html(cache_url: str, students: Students, assets: Assets,
                       notes: dict[str, str] | None = None) -> str:
    """The grid for a teacher without an oracle (Wan): cached prompts, seeds and noise."""
    reader = CacheReader(cache_url)
    side = open_sampling_side(reader.fingerprint)
    records, clips = cached_clips(reader, students, notes=notes)
    if not records:
        return pending("no samples stored yet")
    cells = ['<div class="muted">prompt (cached seed)</div>'] + [f"<div><b>{esc(c.label)}</b></div>" for c in clips]
    encode = []
    for i, rec in enumerate(records):
        cells.append(f"<div>{esc(rec['prompt'])}<br><span class=\"muted\">seed {esc(rec['seed'])}, "
                     "trained on</span></div>")
        for j, clip in enumerate(clips):
            if clip.x0 is None:
                cells.append(f'<div class="pending">{esc(clip.note)}</div>')
                continue
            frames = side.render(clip.x0[i:i + 1])  # (1, F', H', W', 3)
            encode.append((len(cells), f"cached{j}_prompt{i}", frames[0], f"{clip.label}: {rec['prompt']}"))
            cells.append("<figure>{video}</figure>")
    _encode_into(cells, encode, assets, side.fps)
    return (f'<div class="clips" style="grid-template-columns: 180px repeat({len(clips)}, auto)">'
            f'{"".join(cells)}</div><p class="muted">Decoded by the cache\'s teacher side '
            f"({esc(side.kind)}), {side.fps:g} fps; the students start from "
            "each cached sample's own noise and text embedding.</p>")


def _encode_into(cells: list[str], encode: list[tuple[int, str, np.ndarray, str]], assets: Assets,
                 fps: float) -> None:
    """Encode the clips in parallel (ffmpeg processes) and put each <video> in its cell."""
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        videos = list(pool.map(lambda job: assets.video(job[1], job[2], fps, job[3]), encode))
    for (index, *_), video in zip(encode, videos):
        cells[index] = cells[index].replace("{video}", video, 1)


def sample_stage_html(record: dict[str, Any], rel_prefix: str) -> str:
    """The `sample` stage's own outputs (pipeline.text_to_video), any teacher."""
    outputs = record.get("outputs", {})
    videos = outputs.get("videos", []) if isinstance(outputs, dict) else []
    cells = []
    for url, prompt in zip(videos, record.get("prompts", [])):
        name = str(url).rsplit("/", 1)[-1]
        cells.append(f'<figure><video src="{esc(rel_prefix + name)}" autoplay loop muted playsinline controls '
                     f'preload="auto"></video><figcaption>{esc(prompt)}</figcaption></figure>')
    facts = (f"{esc(record.get('stage', '?')).upper()} checkpoint step {esc(record.get('step'))}, seed "
             f"{esc(record.get('seed'))}, {esc(record.get('steps'))} steps, streaming {esc(record.get('streaming'))}")
    scores = record.get("scores")
    if isinstance(scores, dict):
        facts += f"; oracle adherence {esc(scores.get('adherence'))}"
    return (f'<p class="muted">{facts}</p><div class="clips" style="grid-template-columns: repeat(4, auto)">'
            f'{"".join(cells)}</div>')
