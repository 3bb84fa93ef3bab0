"""The student's streaming sampler against the formulation it replaced (session 15): new/old time
ratios measured in one run, old and new in pairs (which goes first alternating), medians.

New: a stream's passes share what they derive from the text (embedding, pooling, every block's
cross-attention keys and values) and from (sigma, d) (the adaLN modulations, fusion gates and
final layer's), without grad (student_train/model/reuse.py); SSA's sink case without grad keeps
views of the cache where torch.where copied it. Old (``old_stream``): every pass computes all of
it.

1. ``StudentCheckpoint.sample`` streaming a trained AR student of the memory task (default
   runs/memory_bench_s13/regression_0/seed0/ar; a random model of its shape if absent) at batch
   16 over 15 and 60 latent frames, and with guidance 2 (the doubled batch);
2. the same shape with an SSA window of 4 chunks and a sink (random weights), 60 frames, and
   what SSA's sink views alone change there;
3. stage 2's training steps (forward + backward, batch 16, 15 one-frame chunks): the causal
   phase (teacher_forcing_loss: the commits with grad) and a self-forcing rollout (the passes
   before the exit step and the commits without grad).

Each case checks the bytes (outputs, and gradients where it trains) against the old run;
tests/student_train/test_streaming_reuse.py does so on small random models.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_stream [--repeats 15] [--checkpoint URL]

(-m: it imports bench.bench_lcha_stream's timing loop, as the tests import the benches.)
"""

from __future__ import annotations

import argparse
import contextlib
import os
from unittest import mock

import torch

from bench.bench_lcha_stream import MEMORY_TASK, compare, train_step
from student_train.model import S2DiT, ssa
from student_train.model.reuse import NONE, StreamReuse
from student_train.sampler import sample_streaming
from student_train.self_forcing.rollout import rollout

CHECKPOINT = "runs/memory_bench_s13/regression_0/seed0/ar"
SIGMAS = [1.0, 0.9, 0.75, 0.5, 0.0]  # the memory task's few-step schedule


def no_reuse():
    return mock.patch.object(StreamReuse, "shared", lambda self, *args: NONE)


@contextlib.contextmanager
def old_stream():
    """The streaming model as it ran before: no reuse across passes, SSA's sink case through
    torch.where whatever the grad mode."""
    with no_reuse(), mock.patch.object(ssa, "_eager", lambda flag: False):
        yield


def without_reuse(run):
    """``run`` with the reuse off in old and new alike: what SSA's sink views alone change."""
    def wrapped():
        with no_reuse():
            return run()
    return wrapped


def memory_student(url: str, **changes) -> tuple[S2DiT, float]:
    """The trained student at ``url`` (changes: none) and its context sigma, else a random model
    of the memory task's shape (context sigma 0)."""
    if not changes and os.path.exists(url):
        from student_train.student import StudentCheckpoint

        student = StudentCheckpoint.load(url)
        return student.model, student.context_sigma
    torch.manual_seed(0)
    model = S2DiT(MEMORY_TASK.replace(**changes))
    for p in model.parameters():  # adaLN-zero init would make every block the identity
        p.data.normal_(0, 0.05)
    return model.eval(), 0.0


def stream_case(model: S2DiT, context_sigma: float, frames: int, batch: int = 16,
                guidance: float = 1.0):
    g = torch.Generator().manual_seed(frames)
    cfg = model.config
    noise = torch.randn(batch, cfg.latent_channels, frames, cfg.latent_height, cfg.latent_width,
                        generator=g)
    text, mask = torch.randn(batch, 16, cfg.text_dim, generator=g), torch.ones(batch, 16, dtype=torch.bool)
    mask[:, 10:] = False  # padded text, as a cache batch has
    null = (torch.zeros(16, cfg.text_dim), torch.zeros(16, dtype=torch.bool))

    def run():
        return [sample_streaming(model, noise, text, mask, SIGMAS, context_sigma=context_sigma,
                                 guidance=guidance, null=null)]
    return run


def rollout_step(model: S2DiT, batch: int = 16, frames: int = 15):
    """One self-forcing rollout with grad through its exit steps, forward + backward."""
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(batch, 4, frames, 8, 8, generator=g)
    text, mask = torch.randn(batch, 8, 32, generator=g), torch.ones(batch, 8, dtype=torch.bool)
    exits = [int(k) for k in torch.randint(0, len(SIGMAS) - 1, (frames,), generator=g)]
    model.train()

    def run():
        model.zero_grad(set_to_none=True)
        x = rollout(model, noise, text, mask, SIGMAS, exits, context_sigma=0.1,
                    context_noise=torch.ones_like(noise))
        x.square().mean().backward()
        return [x.detach()] + [p.grad for p in model.parameters()]
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--checkpoint", default=CHECKPOINT)
    args = parser.parse_args()
    trained, context_sigma = memory_student(args.checkpoint)
    windowed, _ = memory_student(args.checkpoint, ssa_window=4, ssa_sink=True)
    untrained, _ = memory_student(args.checkpoint, chunk_frames=1)
    n = args.repeats
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); trained student: "
          f"{args.checkpoint if os.path.exists(args.checkpoint) else 'absent, a random one'}\n")
    print("| case | old (ms) | new (ms) | new / old (median of pairs) | new / old (fastest) | same bytes |\n"
          "|---|---|---|---|---|---|")
    compare("trained AR student, 15 frames, batch 16", stream_case(trained, context_sigma, 15), n, reference=old_stream)
    compare("trained AR student, 60 frames, batch 16", stream_case(trained, context_sigma, 60), max(3, n // 3), reference=old_stream)
    compare("trained AR student, 15 frames, batch 16, guidance 2",
            stream_case(trained, context_sigma, 15, guidance=2.0), n, reference=old_stream)
    compare("SSA window 4 + sink (random), 60 frames, batch 16", stream_case(windowed, 0.0, 60),
            max(3, n // 3), reference=old_stream)
    compare("the same, SSA's sink views alone (no reuse in either)",
            without_reuse(stream_case(windowed, 0.0, 60)), max(3, n // 3), reference=old_stream)
    compare("stage-2 causal step, batch 16, 15 chunks, fwd + bwd", train_step(untrained, batch=16), n,
            reference=old_stream)
    compare("stage-2 self-forcing rollout, batch 16, 15 chunks, fwd + bwd", rollout_step(untrained), n,
            reference=old_stream)


if __name__ == "__main__":
    main()
