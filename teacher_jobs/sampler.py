"""The trajectory recorder: runs a teacher's solver loop itself and records DESIGN 3.1.

For every prompt: initial noise from the counter-based RNG, the state before each kept step
with its sigma and timestep, v_cond and v_uncond, guidance and expert per step, the final x0 and
the trimmed text embeddings; with a teacher's ``causal_chunk_frames`` set, its causal ODE pairs
too (``Teacher.causal_trajectories``). Bad prompts become rejections with a reason; the batch goes on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cache_schema import CAUSAL_PAIR_FIELDS, FIELD_BY_NAME, canonical_json, flow
from cache_schema import fingerprint_digest as digest_of
from cache_schema.noise import batch_noise
from cache_schema.sample_id import make_sample_id, normalise_prompt

from .prompts import decode_prompt, validate_prompt
from .teachers.base import CODE_VERSION, Teacher


@dataclass
class Rejection:
    index: int  # position in the input list
    prompt: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "prompt": self.prompt, "reason": self.reason}


@dataclass
class Batch:
    """Validated prompts of one call with their ids; rejections carry the rest."""

    prompts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    sample_ids: list[str] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def cache_fingerprint(teacher: Teacher | dict[str, Any], *, keep_steps: Sequence[int],
                      global_seed: int, half_dtype: str, negative_prompt: str) -> dict[str, Any]:
    """The full fingerprint of a cache: the teacher's (a teacher, or the fingerprint its
    section computed without weights) plus the recording settings.

    Round-tripped through canonical JSON so it compares equal to one read from a manifest.
    """
    base = teacher if isinstance(teacher, dict) else teacher.fingerprint()
    return json.loads(canonical_json({**base, "keep_steps": list(keep_steps),
                                      "global_seed": int(global_seed), "half_dtype": half_dtype,
                                      "negative_prompt": negative_prompt,
                                      "recorder_version": CODE_VERSION}))


def _slice(batch: Batch, start: int, size: int) -> Batch:
    end = start + size
    return Batch(prompts=batch.prompts[start:end], seeds=batch.seeds[start:end],
                 sample_ids=batch.sample_ids[start:end])


def prepare_batch(teacher: Teacher, prompts: Sequence[str | bytes], seeds: Sequence[int],
                  fingerprint_digest: str) -> Batch:
    batch = Batch()
    for i, (raw, seed) in enumerate(zip(prompts, seeds, strict=True)):
        reason = validate_prompt(raw, max_tokens=teacher.max_text_len,
                                 count_tokens=teacher.count_tokens)
        text, _ = decode_prompt(raw)
        if reason:
            shown = text if text is not None else repr(raw)
            batch.rejections.append(Rejection(i, shown, reason))
            continue
        prompt = normalise_prompt(text)
        batch.prompts.append(prompt)
        batch.seeds.append(int(seed))
        batch.sample_ids.append(make_sample_id(prompt, int(seed), fingerprint_digest))
    return batch


@torch.no_grad()
def _run(teacher: Teacher, batch: Batch, *, global_seed: int, negative_prompt: str,
         on_step: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None):
    """The solver loop; ``on_step(i, x, v_cond, v_uncond)`` sees each state before its step.
    Returns (noise, x0, texts)."""
    noise = torch.from_numpy(batch_noise(global_seed, batch.sample_ids, teacher.latent_shape))
    x = noise.to(teacher.device, teacher.dtype)
    text = teacher.encode_prompts(batch.prompts)
    neg = teacher.encode_prompts([negative_prompt] * len(batch.prompts))
    teacher.reset_solver()
    for i in range(teacher.num_steps):
        v_c, v_u = teacher.velocity(x, i, text, neg)
        if on_step is not None:
            on_step(i, x, v_c, v_u)
        v = flow.classifier_free_guidance(v_u, v_c, teacher.guidance_at(i))
        x = teacher.solver_step(x, v, i)
    return noise, x.float().cpu(), text, neg


def record_trajectories(teacher: Teacher, prompts: Sequence[str | bytes], seeds: Sequence[int], *,
                        global_seed: int, keep_steps: Sequence[int], negative_prompt: str = "",
                        half_dtype: str = "float16", fingerprint_digest: str | None = None,
                        micro_batch: int = 0) -> tuple[list[dict[str, Any]], list[Rejection]]:
    """Records (passing cache_schema.validate_record) for valid prompts, and rejections.

    ``micro_batch`` samples share one pass of the solver loop (0: the whole call). Noise is keyed
    by sample id, text is padded to the encoder's fixed length, the solver restarts per
    micro-batch, and a teacher whose kernels round by batch shape (Wan) runs its networks one
    sample per call: a sample's bytes do not depend on the micro-batch size or its neighbours
    (tested at micro-batch 1, 3 and 8)."""
    if fingerprint_digest is None:
        fingerprint_digest = digest_of(cache_fingerprint(
            teacher, keep_steps=keep_steps, global_seed=global_seed, half_dtype=half_dtype,
            negative_prompt=negative_prompt))
    batch = prepare_batch(teacher, prompts, seeds, fingerprint_digest)
    if not batch.prompts:
        return [], batch.rejections
    layout = teacher.layout(tuple(keep_steps), half_dtype)
    half = layout.numpy_dtype(FIELD_BY_NAME["x0"])
    kept = _Kept.allocate(teacher, len(batch.prompts), list(keep_steps), half)
    finals = _Finals()
    size = micro_batch or len(batch.prompts)
    for start in range(0, len(batch.prompts), size):
        _record_part(teacher, _slice(batch, start, size), start, kept, finals,
                     global_seed=global_seed, negative_prompt=negative_prompt)
    return _records(teacher, batch, kept, finals, negative_prompt), batch.rejections


@dataclass
class _Kept:
    """The kept steps of a whole call, written in place by each micro-batch.

    Kept states go straight into half-precision arrays (B, S, C, F, H, W), one cast per step:
    no float32 copies of the whole trajectory, and each record's tensors are views of them.
    """

    keep: list[int]
    half: np.dtype
    position: dict[int, int]  # solver step -> index along S
    states: np.ndarray
    v_cond: np.ndarray
    v_uncond: np.ndarray
    # causal ODE pairs (cache_schema CAUSAL_PAIR_FIELDS), when the teacher is asked for them
    pairs: tuple[np.ndarray, np.ndarray] | None

    @classmethod
    def allocate(cls, teacher: Teacher, count: int, keep: list[int], half: np.dtype) -> _Kept:
        shape = (count, len(keep), *teacher.latent_shape)
        states, v_cond, v_uncond = (np.empty(shape, half) for _ in range(3))
        pairs = (np.empty(shape, half), np.empty((count, *teacher.latent_shape), half)) \
            if teacher.causal_chunk_frames else None
        return cls(keep, half, {step: k for k, step in enumerate(keep)}, states, v_cond,
                   v_uncond, pairs)

    def writer(self, rows: slice) -> Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]:
        """The solver loop's ``on_step`` for the samples ``rows`` of the call."""
        def write(i: int, x: torch.Tensor, v_c: torch.Tensor, v_u: torch.Tensor) -> None:
            k = self.position.get(i)
            if k is not None:
                for out, value in ((self.states, x), (self.v_cond, v_c), (self.v_uncond, v_u)):
                    out[rows, k] = value.float().cpu().numpy()
        return write


@dataclass
class _Finals:
    """What each micro-batch's solver loop ends with, in call order."""

    noise: list[torch.Tensor] = field(default_factory=list)
    x0: list[torch.Tensor] = field(default_factory=list)
    emb: list[np.ndarray] = field(default_factory=list)
    neg_emb: list[np.ndarray] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    neg_lengths: list[int] = field(default_factory=list)


def _record_part(teacher: Teacher, part: Batch, start: int, kept: _Kept, finals: _Finals, *,
                 global_seed: int, negative_prompt: str) -> None:
    """Run the solver loop over one micro-batch (rows ``start``... of the call): its kept steps
    (and causal pairs) into ``kept``, its noise, x0 and text into ``finals``."""
    rows = slice(start, start + len(part.prompts))
    n, x, text, neg = _run(teacher, part, global_seed=global_seed,
                           negative_prompt=negative_prompt, on_step=kept.writer(rows))
    if kept.pairs is not None:  # given the clean x0 as cached: the context stage 2 commits
        clean = x.numpy().astype(kept.half).astype(np.float64)
        pair_states, pair_x0 = teacher.causal_trajectories(n, clean, text, neg, kept.keep)
        kept.pairs[0][rows], kept.pairs[1][rows] = pair_states, pair_x0
    finals.noise.append(n)
    finals.x0.append(x)
    finals.emb += list(text.emb.float().cpu().numpy())
    finals.neg_emb += list(neg.emb.float().cpu().numpy())
    finals.lengths += text.lengths
    finals.neg_lengths += neg.lengths


def _records(teacher: Teacher, batch: Batch, kept: _Kept, finals: _Finals,
             negative_prompt: str) -> list[dict[str, Any]]:
    """One record per sample of ``batch`` from the recorded arrays."""
    half, keep = kept.half, kept.keep
    noise, x0 = torch.cat(finals.noise), torch.cat(finals.x0)
    sig, ts = teacher.sigmas(), teacher.timesteps()
    per_step = {"sigmas": sig[keep].astype(np.float32), "timesteps": ts[keep].astype(np.float32),
                "guidance": np.array([teacher.guidance_at(i) for i in keep], np.float32),
                "expert": np.array([teacher.expert_at(i) for i in keep], np.uint8)}
    records = []
    for b, (prompt, seed, sid) in enumerate(zip(batch.prompts, batch.seeds, batch.sample_ids)):
        records.append({
            "sample_id": sid, "prompt": prompt, "negative_prompt": negative_prompt, "seed": seed,
            "noise": noise[b].numpy().astype(half),
            "states": kept.states[b],
            "v_cond": kept.v_cond[b], "v_uncond": kept.v_uncond[b],
            **{name: value.copy() for name, value in per_step.items()},
            "x0": x0[b].numpy().astype(half),
            "text_emb": finals.emb[b][: finals.lengths[b]].astype(half),
            "neg_text_emb": finals.neg_emb[b][: finals.neg_lengths[b]].astype(half),
        })
        if kept.pairs is not None:
            records[-1].update(zip(CAUSAL_PAIR_FIELDS, (kept.pairs[0][b], kept.pairs[1][b])))
    return records


def sample_latents(teacher: Teacher, prompts: Sequence[str], seeds: Sequence[int], *,
                   global_seed: int, negative_prompt: str = "",
                   fingerprint_digest: str = "") -> np.ndarray:
    """The bare sampling loop (no recording): final latents (B, C, F, H, W) float32."""
    batch = prepare_batch(teacher, prompts, seeds, fingerprint_digest)
    _, x0, _, _ = _run(teacher, batch, global_seed=global_seed, negative_prompt=negative_prompt)
    return x0.numpy()
