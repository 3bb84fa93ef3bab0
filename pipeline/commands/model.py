"""`s2dit profile | search | export`: measure blocks, search a layout for a budget, export."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import fsspec

from .train import add_lcha_window_arg, lcha_window_for

LAYOUT_EXAMPLE = "lcha,ssa:2,ssa:2,lcha"


def _student_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("student config (JSON file, then flags override)")
    g.add_argument("--config", help="StudentConfig JSON (e.g. a checkpoint's config.json); default: "
                                    "the built-in demo config (latent 4x5x8x8, text_dim 32)")
    g.add_argument("--latent-shape", help="C,F,H,W of the latent, e.g. 16,21,36,64 for Wan 2.2 at 288x512")
    g.add_argument("--text-dim", type=int, help="text-embedding width (4096 for UMT5-XXL)")
    g.add_argument("--dim", type=int, help="model width")
    g.add_argument("--heads", type=int, help="attention heads (dim / heads even, >= 6)")
    g.add_argument("--patch", help="token patch F,H,W, e.g. 1,2,2")
    g.add_argument("--chunk-frames", type=int, help="latent frames per streaming chunk")
    g.add_argument("--ssa-window", type=int, help="past chunks in the SSA KV cache (required to export)")
    g.add_argument("--layout", help=f"comma-separated blocks, e.g. {LAYOUT_EXAMPLE}")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="any StudentConfig key (repeatable), the value read as TOML and checked "
                        "like the file's, after the file and the flags: --set mlp_ratio=4 "
                        "(or model.KEY=VALUE)")


def _triple(text: str, n: int, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != n:
        raise ValueError(f"{flag} takes {n} comma-separated integers, got {text!r}")
    return values


def _student_config(args: argparse.Namespace):
    from student_train.model import StudentConfig

    data = StudentConfig.load(args.config).to_json() if args.config else {}
    if args.latent_shape:
        c, f, h, w = _triple(args.latent_shape, 4, "--latent-shape")
        data.update(latent_channels=c, latent_frames=f, latent_height=h, latent_width=w)
    for flag, key in (("text_dim", "text_dim"), ("dim", "dim"), ("heads", "heads"),
                      ("chunk_frames", "chunk_frames"), ("ssa_window", "ssa_window")):
        if getattr(args, flag) is not None:
            data[key] = getattr(args, flag)
    if args.patch:
        data["patch"] = _triple(args.patch, 3, "--patch")
    if args.layout:
        data["layout"] = [b.strip() for b in args.layout.split(",") if b.strip()]
    data.update(_sets(args, StudentConfig))
    try:
        return StudentConfig.from_json(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad student config: {exc}") from None


def _sets(args: argparse.Namespace, config: type) -> dict:
    """``--set KEY=VALUE`` of the student config (a key it lacks is refused with the closest)."""
    import dataclasses

    from pipeline.graph.overrides import table_overrides

    return table_overrides(args.overrides, "model", (f.name for f in dataclasses.fields(config)))


# -- profile ---------------------------------------------------------------------------------
def _profile(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    from student_train.search.profile import ProfileConfig, profile, save_lut

    if args.threads:
        torch.set_num_threads(args.threads)
    strides = tuple(int(s) for s in args.strides.split(",")) if args.strides else None
    cfg = ProfileConfig(model=_student_config(args), strides=strides, mode=args.mode, batch=args.batch,
                        repeats=args.repeats, warmup=args.warmup, device=args.device, dtype=args.dtype,
                        text_len=args.text_len)
    lut = profile(cfg)
    save_lut(lut, args.out)
    table = Table(title=f"block costs ({lut['mode']}, batch {lut['batch']}, {lut['device']}, "
                        f"{lut['threads']} threads)")
    for col in ("block", "latency ms", "memory MB", "peak MB", "params"):
        table.add_column(col, justify="right")
    for o in lut["options"]:
        table.add_row(o["name"], f"{o['latency_ms']:.3f}", f"{o['memory_mb']:.2f}",
                      f"{o['peak_mb']:.2f}", f"{o['params']:,}")
    f = lut["fixed"]
    table.add_row("(fixed)", f"{f['latency_ms']:.3f}", f"{f['memory_mb']:.2f}", f"{f['peak_mb']:.2f}", "")
    Console().print(table)
    print(f"wrote {args.out}")
    return 0


# -- search ----------------------------------------------------------------------------------
def _load_scores(spec: str | None) -> dict[str, float]:
    if not spec:
        return {}
    if spec.lstrip().startswith("{"):
        text = spec
    else:
        try:
            with fsspec.open(spec, "r") as handle:
                text = handle.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"--scores file {spec} does not exist (or pass the JSON "
                                    "itself)") from None
    try:
        scores = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--scores must be JSON like '{{\"lcha\": 1.0, \"ssa:2\": 0.9}}' or a file "
                         f"holding it: {exc}") from None
    return {str(k): float(v) for k, v in scores.items()}


def _search(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console
    from rich.table import Table

    from student_train.model import StudentConfig
    from student_train.search.dp import Costs, search
    from student_train.search.profile import load_lut, options_from_lut

    try:
        lut = load_lut(args.lut)
    except FileNotFoundError:
        raise FileNotFoundError(f"no look-up table at {args.lut}: make one with `s2dit profile "
                                f"--out {args.lut}`") from None
    scores = _load_scores(args.scores)
    options, costs = options_from_lut(lut, scores)
    if args.exclude:
        drop = {s.strip() for s in args.exclude.split(",")}
        options = [o for o in options if o.name not in drop]
    costs = Costs(fixed_latency_ms=costs.fixed_latency_ms, fixed_memory_mb=costs.fixed_memory_mb,
                  fixed_peak_mb=costs.fixed_peak_mb, latency_res=args.latency_res,
                  memory_res=args.memory_res)
    memory = args.memory_budget if args.memory_budget is not None else math.inf
    t0 = time.perf_counter()
    result = search(options, args.max_blocks, args.latency_budget, memory, min_blocks=args.min_blocks,
                    costs=costs, sandwich=not args.no_sandwich)
    seconds = time.perf_counter() - t0
    console = Console()
    if result is None:
        raise ValueError(_nothing_fits(args, options, costs, memory))
    model = StudentConfig.from_json(lut["model"]).replace(layout=result.layout)
    out = {**result.to_json(), "budgets": {"latency_ms": args.latency_budget,
                                           "memory_mb": args.memory_budget},
           "scores": {o.name: o.quality for o in options}, "lut": args.lut,
           "lut_device": lut.get("device_name"), "lut_mode": lut.get("mode"),
           "search_seconds": seconds, "model": model.to_json()}
    with fsspec.open(args.out, "w") as handle:
        json.dump(out, handle, indent=1)
    table = Table(title=f"layout ({len(result.layout)} blocks, search {seconds * 1e3:.0f} ms)")
    for col in ("#", "block", "latency ms", "memory MB", "quality"):
        table.add_column(col, justify="right")
    by_name = {o.name: o for o in options}
    for i, name in enumerate(result.layout):
        o = by_name[name]
        table.add_row(str(i), name, f"{o.latency_ms:.3f}", f"{o.memory_mb:.2f}", f"{o.quality:.3f}")
    console.print(table)
    console.print(f"layout: {','.join(result.layout)}")
    console.print(f"predicted: {result.latency_ms:.2f} ms of {args.latency_budget} ms, "
                  f"{result.memory_mb:.2f} MB of {memory} MB, quality proxy {result.quality:.3f}")
    print(f"wrote {args.out}")
    return 0


def _nothing_fits(args: argparse.Namespace, options, costs, memory: float) -> str:
    """Why no layout fits, with the least the budgets must allow (the same DP, minimising
    latency within the memory budget, or memory)."""
    from student_train.search.dp import cheapest

    space = {"min_blocks": args.min_blocks, "costs": costs, "sandwich": not args.no_sandwich}
    what = (f"no layout of {args.min_blocks}-{args.max_blocks} blocks "
            f"({', '.join(o.name for o in options)}{'' if args.no_sandwich else ', LCHA/SSA/LCHA sandwich'})")
    budgets = f"{args.latency_budget:g} ms" + ("" if math.isinf(memory) else f" and {memory:g} MB")
    fastest = cheapest(options, args.max_blocks, memory, **space)
    if fastest is not None:
        within = "" if math.isinf(memory) else " within the memory budget"
        return (f"{what} fits {budgets}: the fastest{within} needs "
                f"{fastest.latency_ms:.3f} ms ({','.join(fastest.layout)}); raise --latency-budget "
                f"to at least that, or lower --min-blocks")
    smallest = cheapest(options, args.max_blocks, **space, by="memory")
    if smallest is not None:
        return (f"{what} fits {budgets}: the smallest needs {smallest.memory_mb:.3f} MB "
                f"({','.join(smallest.layout)}); raise --memory-budget to at least that, or "
                f"lower --min-blocks")
    return (f"{what} exists: a sandwich needs 3 blocks or more, with an lcha and an ssa option "
            f"(raise --max-blocks, keep both kinds, or pass --no-sandwich)")


# -- export ----------------------------------------------------------------------------------
def _trained_model(url: str):
    """The EMA weights of a training output or checkpoint folder, or a save_pretrained folder."""
    from pipeline.eval import load_student
    from student_train.checkpoint import STATE, latest_checkpoint
    from student_train.model import S2DiT

    checkpoint = latest_checkpoint(url)
    fs, root = fsspec.core.url_to_fs(url)
    if checkpoint or fs.exists(f"{root}/{STATE}"):
        return load_student(checkpoint or url)[0]
    try:
        return S2DiT.from_pretrained(url)
    except FileNotFoundError:
        raise FileNotFoundError(f"--model {url} is neither a training output (checkpoints/LATEST), "
                                f"a checkpoint folder ({STATE}) nor a save_pretrained folder") from None


def _streamed_as_asked(model, args: argparse.Namespace):
    """A trained ``model`` streaming as the flags say (student_train/model/bounded.py long_stream):
    SSA's ``--ssa-window`` with ``--stream-sink`` (by default as trained; a model trained without
    a window keeps chunk 0 at its first place, the least recall lost on the mean, BENCHMARKS
    "Bounded memory"), LCHA's sums windowed by ``--lcha-window``."""
    from student_train.model.bounded import long_stream

    if args.ssa_window is None and args.stream_sink is not None:
        raise ValueError("--stream-sink goes with --ssa-window (the window it sits beside)")
    cfg = model.config
    sink = args.stream_sink or ("first" if cfg.ssa_window is None or (cfg.ssa_sink and not cfg.ssa_sink_adjacent)
                                else "adjacent" if cfg.ssa_sink else "none")
    return long_stream(model, ssa_window=args.ssa_window, sink=sink,
                       lcha_window=lcha_window_for(args.lcha_window, args.ssa_window is not None))


def _export_pretrained(args: argparse.Namespace) -> int:
    """A safetensors + config.json folder (S2DiT.from_pretrained) with its sampling.json, read
    back and compared tensor by tensor."""
    import torch

    from student_train.checkpoint import STATE, latest_checkpoint
    from student_train.model import S2DiT
    from student_train.student import SAMPLING, StudentCheckpoint

    if not args.model:
        raise ValueError("--format pretrained exports a trained student: give --model (a training "
                         "output, a checkpoints/step_N folder or a save_pretrained folder)")
    checkpoint = latest_checkpoint(args.model)
    fs, root = fsspec.core.url_to_fs(args.model)
    if checkpoint or fs.exists(f"{root}/{STATE}"):
        student = StudentCheckpoint.load(checkpoint or args.model)
        bounded = _streamed_as_asked(student.model, args)
        student = dataclasses.replace(student, model=bounded)
        student.save_pretrained(args.out)
        model, what = student.model, f"config.json, model.safetensors, {SAMPLING}"
    else:
        model = _streamed_as_asked(_trained_model(args.model), args)
        what = "config.json, model.safetensors"
        model.save_pretrained(args.out)
    loaded = S2DiT.from_pretrained(args.out).state_dict()
    if any(not torch.equal(v.cpu(), loaded[k]) for k, v in model.state_dict().items()):
        raise ValueError(f"{args.out} does not read back as the exported weights")
    print(f"wrote {args.out} ({what}); load it with "
          f"student_train.model.S2DiT.from_pretrained({args.out!r})")
    return 0


def _export(args: argparse.Namespace) -> int:
    import torch

    from student_train.export import export_chunk_step, max_abs_difference, save_exported
    from student_train.model import S2DiT

    if args.format == "pretrained":
        return _export_pretrained(args)
    if args.model:
        model = _streamed_as_asked(_trained_model(args.model), args)
    else:
        if args.stream_sink or args.lcha_window is not None:
            raise ValueError("--stream-sink and --lcha-window change a trained --model; random weights "
                             "take the config's own (--set ssa_sink=true, --set lcha_window=N)")
        torch.manual_seed(0)
        model = S2DiT(_student_config(args))
        print("no --model: exporting randomly initialised weights (a toolchain check)")
    step = export_chunk_step(model.eval(), batch=args.batch, text_len=args.text_len)
    diff = max_abs_difference(step, model, chunks=args.check_chunks)
    meta = save_exported(step, args.out)
    print(f"wrote {args.out} (+ .json: {len(meta['state'])} state tensors); exported vs eager over "
          f"{args.check_chunks} chunks: max |diff| = {diff:.3g}")
    return 0 if diff <= args.tolerance else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    _add_profile(subparsers)
    _add_search(subparsers)
    _add_export(subparsers)


def _add_profile(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "profile", help="measure latency and peak memory of each block kind/stride -> lut.json",
        description="Time each student block option (lcha, ssa:<stride>) at the configured resolution "
                    "and width on this device, measure its transient peak and persistent memory "
                    "(weights + streaming state), and write the look-up table `s2dit search` reads.",
        epilog="example: s2dit profile --out lut.json --latent-shape 16,21,36,64 --text-dim 4096 "
               "--dim 384 --heads 6 --ssa-window 4 --mode chunk")
    _student_args(p)
    p.add_argument("--out", required=True, help="where to write the LUT JSON (any fsspec URL)")
    p.add_argument("--mode", choices=["chunk", "clip"], default="chunk",
                   help="chunk: one streaming step against a filled state (default); clip: a "
                        "bidirectional forward of the whole clip")
    p.add_argument("--strides", help="SSA strides to measure, e.g. 1,2,4 (default: all that divide the grid)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1: one stream)")
    p.add_argument("--text-len", type=int, default=16, help="text tokens (default 16)")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per block; the median is kept")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, mps")
    p.add_argument("--dtype", default="float32", help="float32 (CPU), bfloat16 / float16 on GPU")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=_profile)


def _add_search(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "search", help="budget-aware DP: best sandwich layout under latency/memory budgets",
        description="Exact knapsack DP over layouts (LCHA top slice, SSA filling, LCHA bottom "
                    "slice) that maximises the summed quality proxy of the blocks under a latency "
                    "and an optional memory budget, using the costs of a `s2dit profile` LUT.",
        epilog="example: s2dit search --lut lut.json --latency-budget 20 --memory-budget 64 "
               "--max-blocks 24 --scores '{\"lcha\": 1.0, \"ssa:2\": 0.9}' --out layout.json")
    p.add_argument("--lut", required=True, help="LUT JSON written by `s2dit profile`")
    p.add_argument("--latency-budget", type=float, required=True, metavar="MS",
                   help="latency budget in ms for one step (fixed costs included)")
    p.add_argument("--memory-budget", type=float, metavar="MB",
                   help="memory budget in MB: weights + state + the largest block's activations")
    p.add_argument("--max-blocks", type=int, default=12, help="deepest layout considered (default 12)")
    p.add_argument("--min-blocks", type=int, default=3, help="shallowest layout (default 3)")
    p.add_argument("--scores", help="quality proxy per block as JSON or a JSON file "
                                    "(default: lcha 1.0, ssa:s 1.1 - 0.15 log2 s; replace with "
                                    "scores of short proxy trainings)")
    p.add_argument("--exclude", help="block options to leave out, e.g. ssa:1")
    p.add_argument("--no-sandwich", action="store_true", help="any order of blocks, not LCHA/SSA/LCHA")
    p.add_argument("--latency-res", type=float, help="cost grid in ms (default: cheapest block / 4)")
    p.add_argument("--memory-res", type=float, help="cost grid in MB (default: smallest block / 2)")
    p.add_argument("--out", required=True, help="layout JSON (layout, predicted costs, full model config)")
    p.set_defaults(func=_search)


def _add_export(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="torch.export the streaming chunk step and check it against eager",
        description="Export S2DiT's chunk step (x_chunk, sigma, step_size, text, mask, *state) -> "
                    "(v_chunk, *next_state) with torch.export, save it as .pt2 (+ .json describing "
                    "the state tensors) and compare it with the eager model over several chunks.",
        epilog="examples:\n  s2dit export --model runs/demo/student_ar --ssa-window 4 --out student.pt2\n"
               "  s2dit export --model runs/demo/student_ar --format pretrained --out s2dit_ar",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _student_args(p)
    p.add_argument("--model", help="a training output (its newest checkpoint's EMA weights), a "
                                   "checkpoints/step_N folder or a save_pretrained folder (any "
                                   "fsspec URL); default: random weights of --config/flags")
    p.add_argument("--out", required=True,
                   help="the .pt2 program to write (--format pretrained: a folder)")
    p.add_argument("--format", choices=("pt2", "pretrained"), default="pt2",
                   help="pt2: the torch.export program of the chunk step (default); pretrained: "
                        "a folder of config.json + model.safetensors (EMA weights) + "
                        "sampling.json that S2DiT.from_pretrained loads")
    p.add_argument("--stream-sink", dest="stream_sink", choices=("first", "adjacent", "none"),
                   help="with --ssa-window on a trained --model: chunk 0 kept as an attention sink "
                        "beside the window, at its 'first' place (default for a model trained "
                        "without a window: the least recall lost on the mean, BENCHMARKS "
                        "\"Bounded memory\"), re-positioned 'adjacent' to the window, or 'none' "
                        "(default for a model trained with a window: as trained)")
    add_lcha_window_arg(p, "on a trained --model bounded by --ssa-window")
    p.add_argument("--batch", type=int, default=1, help="batch size baked into the program")
    p.add_argument("--text-len", type=int, default=16, help="text tokens baked into the program")
    p.add_argument("--check-chunks", type=int, default=4, help="chunks to compare with eager")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max |exported - eager| allowed")
    p.set_defaults(func=_export)
