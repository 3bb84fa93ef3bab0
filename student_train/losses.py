"""The 2-in-1 distillation of DESIGN 6: one network, two targets told apart by the step size.

(a) KD, d = 0: the teacher's CFG velocity rebuilt from v_cond / v_uncond at a cached state
    (with sigma jitter: anywhere on the Euler segment to the next state, where the solver's
    velocity is exactly that one);
(b) step distillation, d = sigma_i - sigma_j > 0: the exact average velocity between two states
    of one trajectory at the student's schedule (x_j = x0 at sigma 0; the stored velocity when
    j = i + 1, since the fp16 difference of adjacent states is noisy near sigma = 1).

Conditioning dropout (``cond_dropout`` > 0): a KD row whose draw u[:, 4] < cond_dropout sees the
unconditional (negative-prompt) embedding the teacher computed ``v_uncond`` with, and learns
``v_uncond`` at the stored state (no jitter: the stored unconditional velocity is exact there
only), so the student has an unconditional mode for classifier-free guidance at sampling.
Step rows keep the prompt: their targets are the guided trajectory's own jumps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cache_schema import flow

from .text import drop_text


@dataclass
class Batch:
    """Collated cache records on the training device: the (B, S, ...) trajectories in their
    stored dtype (``_pick`` widens the picked steps to float32), the rest float32."""

    states: torch.Tensor  # (B, S, C, F, H, W)
    v_cond: torch.Tensor  # (B, S, C, F, H, W)
    v_uncond: torch.Tensor  # (B, S, C, F, H, W)
    guidance: torch.Tensor  # (B, S)
    sigmas: torch.Tensor  # (B, S)
    x0: torch.Tensor  # (B, C, F, H, W)
    text: torch.Tensor  # (B, L, D)
    text_mask: torch.Tensor  # (B, L) bool
    # Per-trajectory uniforms in [0, 1) keyed by (seed, epoch, sample id), not by batch
    # position: the same rows however the batch is split across ranks. (B, 5)
    u: torch.Tensor
    # the unconditional embedding of each record (B, L, D) and its mask (conditioning dropout)
    null_text: torch.Tensor | None = None
    null_mask: torch.Tensor | None = None


@dataclass
class Rows:
    x: torch.Tensor
    sigma: torch.Tensor
    step_size: torch.Tensor
    target: torch.Tensor


def _pick(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Row b's entry idx[b] of t (B, S, ...), as float32 (exact from the stored fp16/bf16)."""
    return t[torch.arange(t.shape[0], device=t.device), idx].to(torch.float32)


def kd_rows(batch: Batch, jitter: bool, contiguous: torch.Tensor,
            drop: torch.Tensor | None = None) -> Rows:
    """contiguous[s]: True when stored step s+1 is the solver's next state (for jitter).
    drop (B,) bool: rows that learn the unconditional velocity at the stored state."""
    b, s = batch.sigmas.shape
    i = (batch.u[:, 0] * s).long().clamp(max=s - 1)
    sig_i = _pick(batch.sigmas, i)
    v_u = _pick(batch.v_uncond, i)
    v = flow.classifier_free_guidance(v_u, _pick(batch.v_cond, i),
                                      _pick(batch.guidance, i).view(b, 1, 1, 1, 1))
    x = _pick(batch.states, i)
    if jitter:
        nxt = torch.where(i + 1 < s, batch.sigmas.gather(1, (i + 1).clamp(max=s - 1)[:, None])[:, 0],
                          torch.zeros_like(sig_i))
        ok = contiguous.to(i.device)[i]
        if drop is not None:
            ok = ok & ~drop
        sig = torch.where(ok, sig_i + batch.u[:, 1] * (nxt - sig_i), sig_i)
        x = flow.euler_step(x, sig_i.view(b, 1, 1, 1, 1), sig.view(b, 1, 1, 1, 1), v)
        sig_i = sig
    if drop is not None:
        v = torch.where(drop.view(b, 1, 1, 1, 1), v_u, v)
    return Rows(x, sig_i, torch.zeros_like(sig_i), v)


def kd_text(batch: Batch, cond_dropout: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(text, mask, drop) of the KD rows: the prompt's, except the rows drawn for conditioning
    dropout (u[:, 4] < cond_dropout), which get the unconditional embedding; drop is None
    without dropout."""
    if not cond_dropout:
        return batch.text, batch.text_mask, None
    if batch.null_text is None or batch.null_mask is None:
        raise ValueError("cond_dropout > 0 needs the batch's unconditional embeddings (null_text)")
    drop = batch.u[:, 4] < cond_dropout
    text, mask = drop_text(batch.text, batch.text_mask, (batch.null_text, batch.null_mask), drop)
    return text, mask, drop


def step_rows(batch: Batch, schedule: torch.Tensor, adjacent: torch.Tensor) -> Rows:
    """schedule: (N,) positions along S of the student's start states; the jump from
    schedule[k] goes to schedule[k+1], or to x0 (sigma 0) from the last one.
    adjacent[k]: True when that jump is a single solver step."""
    b = batch.sigmas.shape[0]
    k = (batch.u[:, 2] * len(schedule)).long().clamp(max=len(schedule) - 1).cpu()
    i = schedule[k].to(batch.sigmas.device)
    last = k == len(schedule) - 1
    j = schedule[(k + 1).clamp(max=len(schedule) - 1)].to(i.device)
    x_i, sig_i = _pick(batch.states, i), _pick(batch.sigmas, i)
    x_j = torch.where(last.view(b, 1, 1, 1, 1).to(i.device), batch.x0, _pick(batch.states, j))
    sig_j = torch.where(last.to(i.device), torch.zeros_like(sig_i), _pick(batch.sigmas, j))
    target = flow.average_velocity(x_i, sig_i.view(b, 1, 1, 1, 1), x_j, sig_j.view(b, 1, 1, 1, 1))
    stored = flow.classifier_free_guidance(_pick(batch.v_uncond, i), _pick(batch.v_cond, i),
                                           _pick(batch.guidance, i).view(b, 1, 1, 1, 1))
    use_stored = adjacent.to(i.device)[k].view(b, 1, 1, 1, 1)
    return Rows(x_i, sig_i, sig_i - sig_j, torch.where(use_stored, stored, target))


def distillation_loss(model, batch: Batch, *, schedule, adjacent,
                      contiguous, kd_weight: float, step_weight: float, jitter: bool,
                      kd_fraction: float = 1.0, rows_per_rank: int | None = None,
                      cond_dropout: float = 0.0):
    """Both row kinds through the network in one forward; returns (loss, parts).

    With ``kd_fraction`` < 1 only trajectories whose draw u[:, 3] < kd_fraction give a KD row;
    their squared errors are summed over the expected count (kd_fraction x rows_per_rank), so
    averaging gradients over ranks equals one worker on the whole batch.
    """
    kd_text_all, kd_mask_all, drop = kd_text(batch, cond_dropout)
    kd = kd_rows(batch, jitter, contiguous, drop)
    st = step_rows(batch, schedule, adjacent)
    if kd_fraction < 1.0:
        keep = batch.u[:, 3] < kd_fraction
        kd = Rows(kd.x[keep], kd.sigma[keep], kd.step_size[keep], kd.target[keep])
    x = torch.cat([kd.x, st.x])
    sigma = torch.cat([kd.sigma, st.sigma])
    d = torch.cat([kd.step_size, st.step_size])
    kd_txt, kd_mask = kd_text_all, kd_mask_all
    if kd_fraction < 1.0:
        kd_txt, kd_mask = kd_text_all[keep], kd_mask_all[keep]
    text, mask = torch.cat([kd_txt, batch.text]), torch.cat([kd_mask, batch.text_mask])
    pred = model(x, sigma, d, text, mask)
    n = kd.x.shape[0]
    if kd_fraction < 1.0:
        expected = kd_fraction * (rows_per_rank or batch.u.shape[0])
        kd_loss = (pred[:n] - kd.target).pow(2).flatten(1).mean(1).sum() / expected
    else:
        kd_loss = (pred[:n] - kd.target).pow(2).mean()
    step_loss = (pred[n:] - st.target).pow(2).mean()
    return kd_weight * kd_loss + step_weight * step_loss, {"kd_loss": kd_loss.item(),
                                                          "step_loss": step_loss.item()}
