"""What the oracle's amplitude bias and ghost energy read on a task's modes (issues 24/26).

The score decomposes a sample by least squares on its class's K modes (x = sum_k c_k mu_k +
rest) and reports c_n - 1 for the nearest mode n (amplitude bias) and the energy of the other
modes' part (ghost). When the modes share most of their energy (the memory task: one object,
shape and colour per class; only the identity tint and the later position differ), a sample
that keeps the shared part and only part of what sets its mode apart reads as shrunk AND
ghosted. This prints, for a cache's teacher, the modes' Gram matrix, the share of the shared
part, and the two figures of the samples

    x(alpha) = shared + alpha (mu_n - shared),   shared = the class's mean mode,

i.e. a sample that has moved only ``alpha`` of the way from the class's mean to its mode.

    .venv/bin/python bench/bench_mode_geometry.py --cache runs/memory_causal/cache@train
"""

from __future__ import annotations

import argparse

import numpy as np


def contrast_figures(modes: np.ndarray, alpha: float, n: int = 0) -> tuple[float, float]:
    """(amplitude bias, ghost energy) of x(alpha) for mode ``n`` of ``modes`` (K, D), computed
    as teacher_jobs/teachers/analytic_score.py does."""
    shared = modes.mean(0)
    x = shared + alpha * (modes[n] - shared)
    coeffs = np.linalg.lstsq(modes.T, x, rcond=None)[0]  # (K,)
    others = np.delete(coeffs, n) @ np.delete(modes, n, axis=0)
    return float(coeffs[n] - 1), float(others @ others / (modes[n] @ modes[n]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", required=True, help="an analytic teacher's cache, e.g. runs/memory_causal/cache@train")
    parser.add_argument("--klass", type=int, default=0, help="the class whose modes are shown")
    args = parser.parse_args()
    from cache_schema import load_manifest
    from pipeline.eval import analytic_teacher_of

    manifest = load_manifest(args.cache)
    modes = analytic_teacher_of(manifest.fingerprint).means[args.klass]  # (K, D)
    shared = modes.mean(0)
    norm = float(modes[0] @ modes[0])
    np.set_printoptions(precision=2, suppress=True)
    print(f"class {args.klass}: {modes.shape[0]} modes of {modes.shape[1]} dims, |mu|^2 = {norm:.1f}")
    print("Gram matrix / |mu|^2:\n", modes @ modes.T / norm)
    print(f"share of |mu|^2 in the class's mean mode: {shared @ shared / norm:.3f}")
    print("\n| alpha | amplitude bias | ghost energy |\n|---|---|---|")
    for alpha in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5):
        bias, ghost = contrast_figures(modes, alpha)
        print(f"| {alpha:.1f} | {bias:+.3f} | {ghost:.3f} |")


if __name__ == "__main__":
    main()
