"""Teacher-job overhead and actor scaling, measured in one run (issue 4):

1. the bare sampling loop (no recording, no writing) over the corpus in this process, in
   shard-sized batches, against the Ray job with one actor (recording + writing + commits);
   Ray's start-up is excluded (the runtime is started first) and reported apart;
2. the job with 2 actors against 1.

    .venv/bin/python bench/bench_job.py --prompts 1536
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from teacher_jobs.analytic_corpus import class_prompts, write_corpus
from teacher_jobs.config import JobConfig
from teacher_jobs.job import run_generation
from teacher_jobs.sampler import sample_latents
from teacher_jobs.teachers import build_teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=1536, help="trajectories in the corpus")
    parser.add_argument("--per-shard", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    work = tempfile.mkdtemp(prefix="bj")
    prompts = class_prompts()
    per_prompt = -(-args.prompts // len(prompts))
    corpus = write_corpus(f"{work}/prompts.txt", prompts)
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0

    teacher = build_teacher("analytic")
    entries = [(p, s) for p in prompts for s in range(per_prompt)]
    t0 = time.perf_counter()
    for i in range(0, len(entries), args.per_shard):
        chunk = entries[i : i + args.per_shard]
        sample_latents(teacher, [p for p, _ in chunk], [s for _, s in chunk], global_seed=0)
    bare = time.perf_counter() - t0

    def job(actors: int) -> float:
        out = f"{work}/cache-{actors}"
        t = time.perf_counter()
        result = run_generation(JobConfig(prompts=corpus, output=out, seeds_per_prompt=per_prompt,
                                          samples_per_shard=args.per_shard, num_actors=actors,
                                          commit_every=8), progress=False)
        assert result.ok
        return time.perf_counter() - t

    one = job(1)
    two = job(2)
    n = len(entries)
    print(f"{n} trajectories, 24 steps, analytic teacher; Ray start-up {ray_start:.1f} s (excluded)")
    print(f"1. bare sampling loop {bare:.1f} s; job with 1 actor {one:.1f} s -> overhead {one / bare - 1:+.1%}")
    print(f"2. job with 2 actors {two:.1f} s -> throughput x{one / two:.2f} of 1 actor")
    ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
