"""`s2dit profile | search`: measure block costs on this device, then find the sandwich layout."""

from __future__ import annotations

import argparse
import json

import fsspec


def _profile(args: argparse.Namespace) -> int:
    from student_train.model import StudentConfig
    from student_train.search.profile import profile_blocks, save_lut

    config = StudentConfig(latent_frames=args.frames, latent_height=args.height,
                           latent_width=args.width, dim=args.dim, heads=args.heads)
    lut = profile_blocks(config, args.options.split(","), batch=args.batch, device=args.device,
                         repeats=args.repeats)
    save_lut(lut, args.out)
    for name, row in lut["options"].items():
        print(f"{name:8s} {row['latency_ms']:8.3f} ms  {row['memory_mb']:8.2f} MB")
    print(f"LUT for {lut['tokens']} tokens on {lut['device']} -> {args.out}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from student_train.search.dp import Option, search

    with fsspec.open(args.lut) as handle:
        lut = json.load(handle)
    quality = json.loads(args.quality) if args.quality else {}
    default_quality = {"lcha": 1.0, "ssa:1": 1.3, "ssa:2": 1.1, "ssa:4": 0.8}
    options = [Option(name, row["latency_ms"], row["memory_mb"],
                      float(quality.get(name, default_quality.get(name, 1.0))))
               for name, row in lut["options"].items()]
    result = search(options, args.blocks, args.latency_budget,
                    args.memory_budget if args.memory_budget else float("inf"))
    if result is None:
        print(f"no sandwich of {args.blocks} blocks fits {args.latency_budget} ms"
              + (f" and {args.memory_budget} MB" if args.memory_budget else "")
              + ": raise a budget or lower --blocks")
        return 1
    out = {"layout": list(result.layout), "quality_proxy": result.quality,
           "predicted_latency_ms": result.latency_ms, "predicted_memory_mb": result.memory_mb,
           "latency_budget_ms": args.latency_budget, "memory_budget_mb": args.memory_budget,
           "lut": args.lut}
    with fsspec.open(args.out, "w") as handle:
        json.dump(out, handle, indent=1)
    print(json.dumps(out, indent=1))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    prof = subparsers.add_parser("profile", help="measure block latency/memory on this device -> LUT",
                                 description="Profile each block option (LCHA, SSA per stride) at the "
                                             "given latent size and width on this device.")
    prof.add_argument("--out", required=True, help="LUT JSON path or URL")
    prof.add_argument("--options", default="lcha,ssa:1,ssa:2,ssa:4", help="comma-separated block options")
    prof.add_argument("--frames", type=int, default=5, help="latent frames")
    prof.add_argument("--height", type=int, default=36, help="latent height (288 px / 8)")
    prof.add_argument("--width", type=int, default=64, help="latent width (512 px / 8)")
    prof.add_argument("--dim", type=int, default=96, help="model width")
    prof.add_argument("--heads", type=int, default=4, help="attention heads")
    prof.add_argument("--batch", type=int, default=1, help="batch size")
    prof.add_argument("--repeats", type=int, default=20, help="timed repeats (median)")
    prof.add_argument("--device", default="cpu", help="torch device")
    prof.set_defaults(func=_profile)

    se = subparsers.add_parser("search", help="budget-aware DP over sandwich layouts",
                               description="Maximise the quality proxy of a sandwich layout "
                                           "(LCHA top, SSA filling, LCHA bottom) under latency and "
                                           "memory budgets from a profiled LUT. Exact on its grid.")
    se.add_argument("--lut", required=True, help="LUT JSON from `s2dit profile`")
    se.add_argument("--latency-budget", type=float, required=True, help="milliseconds per forward")
    se.add_argument("--memory-budget", type=float, help="megabytes")
    se.add_argument("--blocks", type=int, default=8, help="number of blocks")
    se.add_argument("--quality", help='per-option quality proxy JSON, e.g. \'{"lcha": 1.0, "ssa:2": 1.2}\'')
    se.add_argument("--out", default="layout.json", help="where to write the chosen layout")
    se.set_defaults(func=_search)
