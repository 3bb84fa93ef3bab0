"""The causal phase of stage 2: teacher forcing of the block-causal student on the cache.

Before DMD, the student initialised from the bidirectional S2DiT-KD learns the causal mode on
the teacher's own clean videos (CausVid / Self-Forcing start DMD from an already causal model;
Causal Forcing, arXiv 2602.02214). For every chunk c of a cached trajectory, in one streaming
pass: the past chunks are committed from the cached x0 (clean, or noised to ``context_sigma``
with their own keyed noise), and the current chunk is a training row of one of two kinds:

- flow matching, d = 0: x_t = (1 - sigma) x0_c + sigma eps with fresh keyed noise; target
  v = eps - x0_c. Its regression optimum is E[eps - x0_c | x_t, past], the causal conditional
  flow (tower property), so it is correct for the first chunk too.
- a cached jump, d = sigma_i - sigma_j > 0: the trajectory's chunk at the student's schedule
  state i, target the average velocity to state j (x0 after the last one), as stage 1's step
  rows. From the bidirectional teacher's trajectory (``states``) this target is a blend of
  modes for a causal student (the teacher chose chunk c with the later chunks' noise too), so
  ``jump_first_chunk`` can leave chunk 0 to flow matching only. A cache with causal ODE pairs
  (cache_schema ``causal_states`` / ``causal_x0``, ``[job.teacher] causal_chunk_frames``: Causal
  Forcing, arXiv 2602.02214) gives every chunk, chunk 0 included, its jumps from the
  autoregressive teacher's ODE of that chunk given the same clean past chunks the student is
  given here, so they are used instead, for every chunk (their chunk size must be the student's).

Conditioning dropout (``cond_dropout`` > 0): a clip drawn for it streams with the cache's
unconditional embedding in place of its prompt's, context included, and learns flow matching
only on every chunk (the cached jumps follow the guided, conditional trajectory), so the causal
student keeps an unconditional mode for classifier-free guidance.

Every draw (sigma, row kind, jump, noises, dropout) is keyed by (seed, epoch, sample id), as
elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cache_schema import CAUSAL_PAIR_FIELDS, flow

from ..text import NULL_TEXT, drop_text, pad_text

CAUSAL_FIELDS = ("x0", "text_emb", "states", "sigmas")
# A cache with causal ODE pairs: the jumps read them, never the bidirectional states.
PAIR_FIELDS = ("x0", "text_emb", "sigmas", *CAUSAL_PAIR_FIELDS)
_CAUSAL_KEY = 0xCA05  # a stream apart from the DMD rows' and stage 1's draws


def causal_fields(pairs: bool) -> tuple[str, ...]:
    """The cache fields the causal phase reads, with or without causal ODE pairs."""
    return PAIR_FIELDS if pairs else CAUSAL_FIELDS


@dataclass
class CausalBatch:
    x0: torch.Tensor  # (B, C, F, H, W) the clean clips: context and flow-matching targets
    # (B, S, C, F, H, W) the jumps' trajectories, stored dtype (fp16): the cached bidirectional
    # states, or each chunk's causal ODE states (``pairs``)
    states: torch.Tensor
    jump_x0: torch.Tensor  # (B, C, F, H, W) where the last jump lands: x0, or causal_x0
    pairs: bool  # the jumps come from causal ODE pairs (every chunk, chunk 0 included)
    sigmas: torch.Tensor  # (B, S)
    text: torch.Tensor  # (B, L, D)
    text_mask: torch.Tensor  # (B, L) bool
    u: torch.Tensor  # (B, 3, chunks): [sigma, row kind, jump] uniforms per chunk
    eps: torch.Tensor  # (B, C, F, H, W) flow-matching noise
    context_noise: torch.Tensor  # (B, C, F, H, W) noise of the committed context
    drop: torch.Tensor | None = None  # (B,) bool: clips conditioned on the null text (dropout)
    null_text: torch.Tensor | None = None  # (B, L, D) the records' unconditional embeddings
    null_mask: torch.Tensor | None = None  # (B, L) bool

    def conditioning(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(text, mask) of every row: the prompt's, or the null text where ``drop``."""
        if self.drop is None:
            return self.text, self.text_mask
        return drop_text(self.text, self.text_mask, (self.null_text, self.null_mask), self.drop)


def collate_causal(records: list[dict], max_text_len: int, *, seed: int, num_chunks: int,
                   device, dtype=torch.float32, pairs: bool = False,
                   cond_dropout: float = 0.0) -> CausalBatch:
    """``pairs``: the cache holds causal ODE pairs (its fingerprint says so): jumps from them.
    ``cond_dropout``: the share of clips conditioned on the null text (module docstring)."""
    tensor = lambda key: torch.from_numpy(np.stack([r[key] for r in records])).to(device, dtype)
    missing = [r["sample_id"] for r in records if pairs and CAUSAL_PAIR_FIELDS[0] not in r]
    if missing:
        raise ValueError(f"sample {missing[0]} holds no {' / '.join(CAUSAL_PAIR_FIELDS)}, yet "
                         "its cache's fingerprint records causal_chunk_frames: a damaged cache; "
                         "run `s2dit cache verify --deep`")
    trajectory, end = CAUSAL_PAIR_FIELDS if pairs else ("states", "x0")
    text, mask = pad_text(records, max_text_len)
    shape = tuple(records[0]["x0"].shape)
    us, normals, drops = [], [], []
    for r in records:
        rng = np.random.default_rng([seed, r["_epoch"], int(r["sample_id"][:15], 16), _CAUSAL_KEY])
        us.append(rng.random((3, num_chunks)))
        normals.append(rng.standard_normal((2, *shape), dtype=np.float32))
        if cond_dropout:  # drawn after the others: they are what they were without dropout
            drops.append(rng.random() < cond_dropout)
    normal = torch.from_numpy(np.stack(normals)).to(device, dtype)  # (B, 2, C, F, H, W)
    # the trajectories stay in their stored dtype: the loss widens the few states it picks
    states = torch.from_numpy(np.stack([r[trajectory] for r in records])).to(device)
    x0 = tensor("x0")
    batch = CausalBatch(x0=x0, states=states, jump_x0=tensor(end) if pairs else x0, pairs=pairs,
                        sigmas=tensor("sigmas"),
                        text=text.to(device, dtype), text_mask=mask.to(device),
                        u=torch.from_numpy(np.stack(us)).to(device, dtype),
                        eps=normal[:, 0], context_noise=normal[:, 1])
    if cond_dropout:
        null, null_mask = pad_text(records, max_text_len, NULL_TEXT)
        batch.drop = torch.tensor(drops, device=device)
        batch.null_text, batch.null_mask = null.to(device, dtype), null_mask.to(device)
    return batch


def teacher_forcing_loss(model, batch: CausalBatch, *, schedule: list[int], context_sigma: float,
                         jump_fraction: float, jump_first_chunk: bool, sigma_shift: float
                         ) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean squared velocity error over every chunk of the batch (one streaming pass).

    schedule: positions along S of the student's few-step start states (the KD plan's).
    jump_first_chunk: chunk 0 gets jump rows too (always with causal ODE pairs).
    """
    b, _, frames, _, _ = batch.x0.shape
    cf = model.config.chunk_frames
    rows = torch.arange(b, device=batch.x0.device)
    state = model.init_stream_state(b, device=batch.x0.device, dtype=batch.x0.dtype)
    view = lambda t: t.view(b, 1, 1, 1, 1)
    n = len(schedule)
    sched = torch.tensor(schedule, device=batch.x0.device)
    losses, jump_share = [], []
    text, mask = batch.conditioning()
    for i, start in enumerate(range(0, frames, cf)):
        part = slice(start, start + cf)
        x0 = batch.x0[:, :, part]  # (B, C, cf, H, W)
        eps = batch.eps[:, :, part]
        # 1. flow-matching rows: fresh noise at a (shifted) uniform sigma in (0, 1)
        sig_fm = flow.shift_sigma(batch.u[:, 0, i], sigma_shift).clamp(1e-3, 1.0)
        x_fm = flow.noisy_state(x0, eps, view(sig_fm))
        # 2. cached-jump rows: schedule state k -> k + 1 (x0 after the last)
        k = (batch.u[:, 2, i] * n).long().clamp(max=n - 1)
        pos_i = sched[k]
        last = k == n - 1
        pos_j = sched[(k + 1).clamp(max=n - 1)]
        x_i = batch.states[rows, pos_i][:, :, part].to(x0.dtype)
        sig_i = batch.sigmas[rows, pos_i]
        x_j = torch.where(view(last), batch.jump_x0[:, :, part],
                          batch.states[rows, pos_j][:, :, part].to(x0.dtype))
        sig_j = torch.where(last, torch.zeros_like(sig_i), batch.sigmas[rows, pos_j])
        jump = batch.u[:, 1, i] < jump_fraction
        if i == 0 and not (jump_first_chunk or batch.pairs):
            jump = torch.zeros_like(jump)
        if batch.drop is not None:  # null-text clips: flow matching only
            jump = jump & ~batch.drop
        x = torch.where(view(jump), x_i, x_fm)
        sigma = torch.where(jump, sig_i, sig_fm)
        d = torch.where(jump, sig_i - sig_j, torch.zeros_like(sig_i))
        target = torch.where(view(jump), flow.average_velocity(x_i, view(sig_i), x_j, view(sig_j)),
                             flow.velocity_target(x0, eps))
        v, _ = model.forward_chunk(x, sigma, d, text, mask, state)
        losses.append((v - target).pow(2).mean())
        jump_share.append(float(jump.float().mean()))
        if start + cf < frames:  # the teacher's clean chunk becomes the next chunk's context
            state = model.commit_chunk(x0, text, mask, state, sigma=context_sigma,
                                       noise=batch.context_noise[:, :, part])
    loss = torch.stack(losses).mean()
    parts = {"causal_loss": loss.item(), "causal_first_chunk_loss": losses[0].item(),
             "causal_jump_share": sum(jump_share) / len(jump_share)}
    if batch.pairs:  # which jumps this run learns (rows without the key: the cached states)
        parts["causal_ode_pairs"] = 1.0
    return loss, parts
