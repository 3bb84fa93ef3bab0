"""`s2dit cache generate | estimate`: run the teacher job, or size it before launching."""

from __future__ import annotations

import argparse

import numpy as np

from cache_schema import FIELDS, FieldKind
from teacher_jobs.cli_args import add_generate_args, config_from_args, run_generate


def bytes_per_sample(layout, text_len: int) -> int:
    total = 0
    for spec in FIELDS:
        if spec.kind is not FieldKind.TENSOR:
            continue
        shape = layout.shape_of(spec.name, text_len)
        total += int(np.prod(shape)) * layout.numpy_dtype(spec).itemsize
    return total


def _estimate(args: argparse.Namespace) -> int:
    from teacher_jobs.corpus import load_corpus
    from teacher_jobs.teachers import build_teacher

    config = config_from_args(args)
    teacher = build_teacher(config.teacher, **config.teacher_kwargs())
    layout = teacher.layout(config.keep_step_indices, config.half_dtype)
    per_sample = bytes_per_sample(layout, layout.max_text_len)
    count = None
    if config.prompts:
        entries, _ = load_corpus(config.prompts, seeds_per_prompt=config.seeds_per_prompt)
        count = len(entries)
    print(f"latent {layout.latent_shape}, {layout.num_kept} of {layout.num_steps} steps kept, "
          f"{layout.half_dtype}")
    print(f"bytes per sample: {per_sample:,} ({per_sample / 2**20:.2f} MiB, text at max length)")
    if count is not None:
        print(f"samples: {count:,}; total: {per_sample * count / 2**30:.2f} GiB "
              f"in {-(-count // config.samples_per_shard)} shards")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    gen = subparsers.add_parser(
        "generate", help="run the teacher over a prompt corpus into a versioned cache (Ray)",
        description="Run the teacher over a prompt corpus on Ray actors and write trajectories, "
                    "scores and embeddings to a cache; rerunning the same command resumes.")
    add_generate_args(gen)
    gen.set_defaults(func=run_generate)
    est = subparsers.add_parser("estimate", help="bytes per sample and total for a job config",
                                description="Print the cache size a job config would produce.")
    add_generate_args(est)
    est.set_defaults(func=_estimate)
