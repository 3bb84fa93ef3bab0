"""LCHA's depth-wise conv: conv2d's own zero padding against padding the planes first, forward +
backward, on token grids of the demo (4x4), the memory task (2x2) and a Wan-like latent (16x16).
Prints each path's time and the ratio, measured in one run (student_train/model/lcha.py picks
the pre-padded path for grids smaller than the kernel).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_conv.py
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

SHAPES = {"memory task 2x2": (64, 17, 2, 2, 96), "demo 4x4": (64, 7, 4, 4, 96),
          "wan-like 16x16": (8, 23, 16, 16, 128)}  # (B, F + kt - 1, H, W, C)


def _step(planes: torch.Tensor, weight: torch.Tensor, prepad: bool) -> None:
    x = planes.clone().requires_grad_()
    view = x.permute(0, 3, 1, 2)
    if prepad:
        view = F.pad(view, (1, 1, 1, 1))
    F.conv2d(view, weight, None, padding=0 if prepad else 1, groups=weight.shape[0]).square().sum().backward()


def seconds(planes: torch.Tensor, weight: torch.Tensor, prepad: bool, repeats: int) -> float:
    for _ in range(2):
        _step(planes, weight, prepad)
    start = time.perf_counter()
    for _ in range(repeats):
        _step(planes, weight, prepad)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    print("| grid | conv2d padding (ms) | pre-padded (ms) | pre-padded / conv2d |\n|---|---|---|---|")
    for name, (b, f, h, w, c) in SHAPES.items():
        planes = torch.randn(b * f, h, w, c)
        weight = torch.randn(c, 1, 3, 3, requires_grad=True)
        own, pre = seconds(planes, weight, False, args.repeats), seconds(planes, weight, True, args.repeats)
        print(f"| {name} | {1e3 * own:.1f} | {1e3 * pre:.1f} | {pre / own:.2f} |")


if __name__ == "__main__":
    main()
