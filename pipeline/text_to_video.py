"""Text in, video out: sample a trained student (S2DiT-KD or S2DiT-AR) for prompts.

1. the checkpoint and the cache generation it trained on (its manifest's fingerprint)
2. the sampling side of the teacher that made that cache (its text encoder and renderer)
3. prompts -> the student's text input exactly as the cache stored ``text_emb``
4. noise from the seed; the checkpoint's few-step schedule (or the full grid, or N steps)
5. sample, chunk by chunk when streaming (default for S2DiT-AR); each finished chunk is
   decoded and its frames appended to the MP4s while the next one is sampled
6. latents (.npy), with an oracle a PNG preview and its scores, then the JSON sidecar last

Every output is written atomically; the sidecar (``OUT.json``) records the resolved settings.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cache_schema import FIELD_BY_NAME, CacheLayout, Manifest, split_ref
from cache_schema.redact import redact_secrets
from pipeline.video_io import CODEC, Mp4Writer, atomic_output
from student_train.device import check_device
from student_train.model.bounded import check_past_chunks
from student_train.student import StudentCheckpoint
from student_train.text import pad_text
from teacher_jobs.prompts import normalise_prompt, validate_prompt
from teacher_jobs.teachers import open_sampling_side
from teacher_jobs.teachers.sampling import Renderer, SamplingSide, TextEncoder
from teacher_jobs.teachers.wan import DTYPES


@dataclass(kw_only=True, slots=True)
class SampleConfig:
    checkpoint: str  # a checkpoints/step_N folder or a training output URL (its newest)
    prompts: list[str]
    out: str = "sample"  # output prefix (any fsspec URL): OUT.npy, OUT.mp4, OUT.json
    seed: int = 0  # noise = torch.randn from a CPU generator seeded with this
    steps: int | None = None  # None: the checkpoint's few-step schedule (full grid with full_step)
    full_step: bool = False  # d = 0 (instantaneous velocity) instead of the jump size
    streaming: bool | None = None  # chunk by chunk; None: as the checkpoint's stage samples
    chunk_frames: int | None = None  # latent frames per streaming chunk (None: the model's)
    video: bool = True
    fps: float | None = None  # None: the teacher's (Wan 16, analytic 4)
    device: str = "cpu"
    dtype: str = "float32"  # student and VAE compute dtype (fp32 on CPU: half is very slow)
    teacher_source: str | None = None  # Wan weights folder, if not where the cache's job had them
    # classifier-free guidance of the student (1: off; needs a student trained with cond_dropout),
    # against the teacher's embedding of the cache's negative prompt
    guidance: float = 1.0
    # streamed videos longer than the trained clip: this many times its latent frames (> 1:
    # streaming only; BENCHMARKS "Issue 26 at one thread": quality past the trained length)
    length: int = 1
    # constant memory however long the stream (student_train/model/bounded.py): SSA keeps this
    # many past chunks ("trained": the widest whose distances the clip had) and chunk 0 as a
    # sink at its "first" place, re-positioned "adjacent" to them, or "none"
    stream_window: int | str | None = None
    stream_sink: str = "first"
    # LCHA's streaming sums over the first and the last this many chunks ("trained": the clip's
    # chunks minus 2): past the trained length the first chunk's share otherwise dilutes
    lcha_window: int | str | None = None

    def __post_init__(self) -> None:
        if self.length < 1:
            raise ValueError(f"length must be >= 1 (times the trained clip), got {self.length}")
        for key in ("stream_window", "lcha_window"):
            check_past_chunks(getattr(self, key), key)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        check_device(self.device, "--device (or [sample] device)")


def check_prompts(prompts: list[str], text: TextEncoder) -> list[str]:
    """Normalised prompts, or a ValueError naming the first one the cache job would refuse."""
    if not prompts:
        raise ValueError("no prompt given: pass --prompt TEXT (repeatable)")
    for i, raw in enumerate(prompts, 1):
        reason = validate_prompt(raw, max_tokens=text.max_text_len, count_tokens=text.count_tokens)
        if reason:
            raise ValueError(f"prompt {i} ({raw!r}) refused: {reason}")
    return [normalise_prompt(p) for p in prompts]


def student_text(text: TextEncoder, prompts: list[str], layout: CacheLayout
                 ) -> tuple[list[np.ndarray], torch.Tensor, torch.Tensor]:
    """(per-prompt ``text_emb`` as the cache stores it: trimmed, in its half dtype; the padded
    (B, L, D) float32 input and (B, L) mask exactly as training pads them)."""
    encoded = text.encode_prompts(prompts)
    half = layout.numpy_dtype(FIELD_BY_NAME["text_emb"])
    emb = encoded.emb.float().cpu().numpy()
    trimmed = [emb[i, :n].astype(half) for i, n in enumerate(encoded.lengths)]
    padded, mask = pad_text([{"text_emb": t} for t in trimmed], layout.max_text_len)
    return trimmed, padded, mask


def _guidance(cfg: SampleConfig, side: SamplingSide, manifest: Manifest, device, dtype) -> dict[str, Any]:
    """The sampler's guidance keywords: none for guidance 1, else the guidance and the null text
    (the cache's negative prompt, encoded and padded as the student's text input is)."""
    if cfg.guidance == 1.0:
        return {}
    _, null, null_mask = student_text(side.text, [manifest.fingerprint.get("negative_prompt", "")],
                                      manifest.layout)
    return {"guidance": cfg.guidance, "null": (null[0].to(device, dtype), null_mask[0].to(device))}


def schedule(plan: dict[str, Any], steps: int | None, full_step: bool) -> list[float]:
    """The trained schedules where they fit, else ``steps`` uniform jumps from 1 to 0."""
    few, grid = plan["schedule_sigmas"], plan["grid_sigmas"]
    if steps is None:
        return [float(s) for s in (grid if full_step else few)]
    for sigmas in (few, grid):
        if steps == len(sigmas) - 1:
            return [float(s) for s in sigmas]
    return [float(s) for s in np.linspace(1.0, 0.0, steps + 1)]


def _video_urls(out: str, n: int) -> list[str]:
    return [f"{out}.mp4"] if n == 1 else [f"{out}.{i}.mp4" for i in range(n)]


def _append(writers: list[Mp4Writer], frames: np.ndarray | None) -> None:
    """(B, n, H, W, 3) frames, one clip per writer (None: the renderer holds them back)."""
    if frames is not None:
        for writer, clip in zip(writers, frames, strict=True):
            writer.append(clip)


@contextlib.contextmanager
def _mp4_writers(urls: list[str], fps: float) -> Iterator[list[Mp4Writer]]:
    """One writer per sample; each MP4 is published only if every sample finished."""
    with contextlib.ExitStack() as stack:
        writers = []
        for url in urls:
            writer = Mp4Writer(stack.enter_context(atomic_output(url)), fps)
            stack.callback(writer.close)  # runs before its atomic_output publishes
            writers.append(writer)
        yield writers


def generate(cfg: SampleConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run one text-to-video request; returns the sidecar record (also written to OUT.json).

    ``log`` (e.g. print) gets one line per finished chunk as it happens: the time to it since
    sampling began (latent, then decoded frames) and the chunk's own time. For a streaming
    model these are what a viewer waits for; the sidecar keeps them (``first_chunk_s``,
    ``chunk_s``)."""
    started = time.perf_counter()
    # 1. the student and the cache generation it trained on
    student = StudentCheckpoint.load(cfg.checkpoint).long_stream(
        ssa_window=cfg.stream_window, sink=cfg.stream_sink, lcha_window=cfg.lcha_window)
    manifest = student.trained_manifest()
    # 2. the teacher side that made the cache
    side = open_sampling_side(manifest.fingerprint, source=cfg.teacher_source, device=cfg.device,
                              dtype=cfg.dtype)
    # 3. prompts -> the student's text input
    prompts = check_prompts(cfg.prompts, side.text)
    device, dtype = torch.device(cfg.device), DTYPES[cfg.dtype]
    _, text, mask = student_text(side.text, prompts, manifest.layout)
    text, mask = text.to(device, dtype), mask.to(device)
    student.to(device, dtype)
    # 4. noise and schedule; noise is drawn on the CPU in fp32 so a seed means one clip anywhere
    c, f, h, w = manifest.layout.latent_shape
    shape = (len(prompts), c, f * cfg.length, h, w)  # (B, C, F, H, W)
    streaming = student.streams if cfg.streaming is None else cfg.streaming
    longer = cfg.length > 1 or cfg.stream_window is not None or cfg.lcha_window is not None
    if longer and not streaming:
        raise ValueError("--length > 1, --stream-window and --lcha-window stream chunk by chunk: add "
                         "--streaming (the whole clip at once is the trained length, with the whole past)")
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(cfg.seed)).to(device, dtype)
    sigmas = schedule(student.plan, cfg.steps, cfg.full_step)
    # 5. sample; render each chunk as it is finished
    chunks = student.chunks(noise, text, mask, sigmas, streaming=streaming, use_step_size=not cfg.full_step,
                            chunk_frames=cfg.chunk_frames, **_guidance(cfg, side, manifest, device, dtype))
    fps = cfg.fps or side.fps
    videos = _video_urls(cfg.out, len(prompts)) if cfg.video else []
    renderer = side.renderer(shape[-2], shape[-1]) if videos else None
    sampled = _sample_and_render(chunks, videos, fps, renderer, log)
    # 6. latents, preview and scores (an oracle's), the sidecar last: its presence means complete
    outputs, scores = _save_latents(cfg.out, sampled.x0, videos, side, prompts)
    record = _record(cfg, student, manifest, side, prompts=prompts, sigmas=sigmas,
                     streaming=streaming, x0=sampled.x0, outputs=outputs, scores=scores)
    if renderer is not None:
        height, width = sampled.writers[0].size or (0, 0)
        record["video"] = {"fps": fps, "frames": sampled.writers[0].frames, "height": height,
                           "width": width, "codec": CODEC, "decoded": renderer.mode}
    record["seconds"] = {"render": round(sampled.render_s, 3),
                         "total": round(time.perf_counter() - started, 3)}
    # time to the first finished chunk (its latent, then its decoded frames; frames only
    # appear with a video) and each chunk's time (sampling + decode), in order
    record["first_chunk_s"], record["chunk_s"] = sampled.first, sampled.chunk_s
    outputs["sidecar"] = f"{cfg.out}.json"
    with atomic_output(outputs["sidecar"]) as path, open(path, "w") as handle:
        json.dump(redact_secrets(record), handle, indent=1, ensure_ascii=False)
    return record


@dataclass(kw_only=True, slots=True)
class _Sampled:
    x0: np.ndarray  # (B, C, F, H, W) float32, the chunks joined
    writers: list[Mp4Writer]  # closed (each MP4 published); their frame counts and sizes
    render_s: float  # seconds spent decoding and writing frames
    chunk_s: list[float]  # per chunk: sampling (+ render) seconds
    first: dict[str, float]  # the first chunk's latent and decoded times since sampling began


def _sample_and_render(chunks: Iterator[torch.Tensor], videos: list[str], fps: float,
                       renderer: Renderer | None, log: Callable[[str], None] | None) -> _Sampled:
    """Draw the student's chunks; each is rendered into the MP4s as soon as it is finished."""
    latents, render_s = [], 0.0
    chunk_s, first = [], {}
    sampling_began = last = time.perf_counter()
    with _mp4_writers(videos, fps) as writers:
        for i, chunk in enumerate(chunks):
            latents.append(chunk.float().cpu())
            latent_at = time.perf_counter()
            if renderer is not None:
                t0 = time.perf_counter()
                _append(writers, renderer.push(chunk))
                render_s += time.perf_counter() - t0
            done_at = time.perf_counter()
            chunk_s.append(round(done_at - last, 4))
            if i == 0:
                first = {"latent": round(latent_at - sampling_began, 4),
                         "decoded": round(done_at - sampling_began, 4)}
            if log is not None:
                log(f"chunk {i}: latent at {latent_at - sampling_began:.3f} s, frames at "
                    f"{done_at - sampling_began:.3f} s (this chunk {done_at - last:.3f} s)")
            last = done_at
        if renderer is not None:
            t0 = time.perf_counter()
            _append(writers, renderer.finish())
            render_s += time.perf_counter() - t0
    return _Sampled(x0=torch.cat(latents, dim=2).numpy(), writers=writers, render_s=render_s,
                    chunk_s=chunk_s, first=first)


def _save_latents(out: str, x0: np.ndarray, videos: list[str], side: SamplingSide,
                  prompts: list[str]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the outputs written so far, the oracle's scores or None): OUT.npy, and with an oracle
    a PNG preview beside it."""
    outputs: dict[str, Any] = {"latents": f"{out}.npy", "videos": videos}
    with atomic_output(outputs["latents"]) as path:
        np.save(path, x0)
    scores = side.scores(x0, prompts)
    if scores is not None:
        outputs["preview"] = f"{out}.png"
        with atomic_output(outputs["preview"]) as path:
            side.save_preview(x0, path)  # scores: a side with an oracle draws a preview
    return outputs, scores


def _record(cfg: SampleConfig, student: StudentCheckpoint, manifest: Manifest,
            side: SamplingSide, *, prompts: list[str], sigmas: list[float], streaming: bool,
            x0: np.ndarray, outputs: dict[str, Any], scores: dict[str, Any] | None
            ) -> dict[str, Any]:
    """The sidecar's resolved settings and outputs (``generate`` adds video and timings)."""
    return {
        "checkpoint": student.url, "stage": student.stage, "step": student.step,
        "manifest": {"cache_url": split_ref(student.manifest_info["cache_url"])[0],
                     "cache_id": manifest.cache_id,
                     "generation": manifest.generation,
                     "fingerprint_digest": manifest.fingerprint_digest},
        **side.describe(), "prompts": prompts, "seed": cfg.seed,
        "noise": "torch.randn, CPU generator seeded with seed, fp32",
        "steps": len(sigmas) - 1, "sigmas": sigmas,
        "step_size": "zero" if cfg.full_step else "jump",
        "streaming": streaming,
        "chunk_frames": ((cfg.chunk_frames or student.model.config.chunk_frames) if streaming
                         else None),
        "context_sigma": student.context_sigma if streaming else None,
        **({"guidance": cfg.guidance} if cfg.guidance != 1.0 else {}),
        **({"length": cfg.length} if cfg.length != 1 else {}),
        **({"stream_window": student.model.config.ssa_window, "stream_sink": cfg.stream_sink}
           if cfg.stream_window is not None else {}),
        **({"lcha_window": window} if (window := student.model.config.lcha_window) is not None else {}),
        "device": cfg.device, "dtype": cfg.dtype, "latent_shape": list(x0.shape),
        "outputs": outputs, "scores": scores,
    }
