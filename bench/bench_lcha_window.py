"""Is S2DiT-AR's fade past the trained length LCHA's running sums? (a diagnostic, not a product path)

LCHA streams S = sum_j rope(phi(k_j)) v_j^T and z = sum_j phi(k_j) over every committed frame:
at 4x the trained length the first chunk (the identity's sighting) is one of 60 frames in the
sums where training gave it one of at most 15. This bench scores a trained S2DiT-AR checkpoint
with each LCHA block's sums windowed at inference: the first committed chunk kept apart (a
sink, as SSA's) plus the last ``--lcha-window`` chunks, every older chunk's share dropped. SSA
is left as trained unless ``--stream-window`` bounds it too (student_train/model/bounded.py).
Only streaming changes (the patch is on LCHA's streaming state); scoring is ``s2dit eval``'s.

    .venv/bin/python bench/bench_lcha_window.py --checkpoint runs/memory_bench_s16/s2dit/seed1/ar \\
        --lcha-window 13 --per-class 48 --noise tune --lengths 4 --report runs/lcha_w13_s1.json

A diagnostic on the tune noise: it says where the fade comes from, and is never a reported
figure (BENCHMARKS "Bounded memory").
"""

from __future__ import annotations

import argparse
import json
import os

import torch


def windowed_lcha(window: int) -> None:
    """Patch LCHA (this process) so its streaming sums hold a sink chunk and the last ``window``
    chunks: state s (B, H, 1 + window, d, d) and z (B, H, 1 + window, d), slot 0 the sink."""
    from student_train.model import lcha

    def init_state(self, batch, grid, device=None, dtype=torch.float32):
        state = original_init(self, batch, grid, device, dtype)
        if self.use_attn:
            d = self.head_dim
            state["s"] = torch.zeros(batch, self.heads, 1 + window, d, d, device=device, dtype=dtype)
            state["z"] = torch.zeros(batch, self.heads, 1 + window, d, device=device, dtype=dtype)
        return state

    def attention(self, x, ctx, state=None):
        if state is None:
            return original_attention(self, x, ctx, state)
        fq_r, fq, fk_r, fk, v = self.features(x, ctx)
        past = (state["s"].sum(2), state["z"].sum(2))
        out, _ = lcha.linear_attention(fq_r, fq, fk_r, fk, v, past=past)
        chunk_s = torch.matmul(fk_r.permute(0, 2, 3, 1), v.transpose(1, 2))[:, :, None]  # (B, H, 1, d, d)
        chunk_z = fk.sum(1)[:, :, None]  # (B, H, 1, d)
        if not bool(state["z"][:, :, 0].any()):  # nothing committed yet: this chunk is the sink
            s = torch.cat([chunk_s, state["s"][:, :, 1:]], 2)
            z = torch.cat([chunk_z, state["z"][:, :, 1:]], 2)
        else:  # the ring drops its oldest chunk
            s = torch.cat([state["s"][:, :, :1], state["s"][:, :, 2:], chunk_s], 2)
            z = torch.cat([state["z"][:, :, :1], state["z"][:, :, 2:], chunk_z], 2)
        return out.flatten(2), s, z

    original_init, original_attention = lcha.LCHA.init_state, lcha.LCHA.attention
    lcha.LCHA.init_state, lcha.LCHA.attention = init_state, attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--checkpoint", required=True, help="an S2DiT-AR training output or checkpoint")
    parser.add_argument("--lcha-window", type=int, required=True,
                        help="past chunks LCHA's sums keep beside the first (the sink)")
    parser.add_argument("--stream-window", help="also bound SSA (s2dit eval --stream-window)")
    parser.add_argument("--per-class", type=int, default=48)
    parser.add_argument("--noise", choices=("tune", "report"), default="tune")
    parser.add_argument("--lengths", type=int, nargs="+", default=[4])
    parser.add_argument("--report", required=True, help="the evaluation's JSON")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    windowed_lcha(args.lcha_window)
    from pipeline.eval import evaluate_checkpoint, format_report, save_report

    window = None if args.stream_window is None else (
        args.stream_window if args.stream_window == "trained" else int(args.stream_window))
    report = evaluate_checkpoint(args.checkpoint, per_class=args.per_class, noise=args.noise,
                                 lengths=tuple(args.lengths), whole_clip=False, stream_window=window)
    report["lcha_window"] = args.lcha_window
    print(format_report(report))
    save_report(report, args.report)
    print(json.dumps({"report": args.report, "lcha_window": args.lcha_window}))


if __name__ == "__main__":
    main()
