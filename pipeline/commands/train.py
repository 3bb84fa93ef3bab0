"""`s2dit train kd | train ar | sample | eval`: student training (stage 1 and 2), sampling and
analytic scoring."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from rich.console import Console

from .errors import friendly_errors
from .output import count, duration, key_values, working


def _knobs(args: argparse.Namespace) -> dict[str, Any]:
    return {"lr": args.lr, "checkpoint_every": args.checkpoint_every}


def _sets(args: argparse.Namespace, config: type) -> dict[str, Any]:
    """``--set KEY=VALUE`` of the stage's table (after the file and the flags)."""
    from pipeline.graph.overrides import table_overrides

    return table_overrides(args.overrides, config.TABLE, (f.name for f in dataclasses.fields(config)))


def _add_knobs(parser: argparse.ArgumentParser, table: str, lr: str, example: str) -> None:
    """The training flags both stages take: learning rate, checkpoint cadence, --set, --quiet,
    --json."""
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true",
                        help="print what was trained as one JSON line (checkpoint, steps, ...)")
    parser.add_argument("--lr", type=float, help=f"learning rate ({lr})")
    parser.add_argument("--checkpoint-every", type=int, dest="checkpoint_every", metavar="STEPS",
                        help="checkpoint every STEPS steps (besides one every checkpoint_every_s "
                             "seconds, default 300, at a phase's end and at the end)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"any [{table}] key (repeatable), the value read as TOML and checked "
                             f"like the file's, after the file and the flags: --set "
                             f"checkpoint_every_s=60 --set {example} (or {table}.KEY=VALUE)")


def _train_kd(args: argparse.Namespace) -> int:
    from student_train.config import TrainConfig
    from student_train.launch import launch

    overrides = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed,
                 "device": args.device, "layout_file": args.layout_file, **_knobs(args)}
    config = TrainConfig.load(args.config, **{**overrides, **_sets(args, TrainConfig)})
    done = launch("kd", config, args.workers, out_url=args.out, cache_url=args.cache,
                  max_failures=args.max_failures, progress=not args.quiet)
    return _print_launched(done, args)


def _train_ar(args: argparse.Namespace) -> int:
    from student_train.launch import launch
    from student_train.self_forcing import ARConfig

    overrides = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed,
                 "device": args.device, "chunk_frames": args.chunk_frames,
                 "causal_steps": args.causal_steps, **_knobs(args)}
    config = ARConfig.load(args.config, **{**overrides, **_sets(args, ARConfig)})
    done = launch("ar", config, args.workers, out_url=args.out, init_url=args.init,
                  cache_url=args.cache, max_failures=args.max_failures, progress=not args.quiet)
    return _print_launched(done, args)


def _print_launched(done, args: argparse.Namespace) -> int:
    """What a training command did: a table for people, or with --json one JSON line."""
    out = args.out.rstrip("/")
    if args.json:
        print(json.dumps({"checkpoint": done.checkpoint, "out": out, "workers": done.workers,
                          "resumed_from": done.resumed_from, "train_seconds": done.train_seconds,
                          "phase_steps": done.phase_steps}))
    else:
        Console().print(launched_table(done, out))
    return 0


def launched_table(done, out: str):
    """The checkpoint, the steps of each phase, whether it resumed, the time, where the metrics
    are and what to run next."""
    spec = done.stage
    finished = done.resumed_from is not None and done.resumed_from == done.checkpoint
    title = f"{spec.title}: " + ("already trained, nothing left to do" if finished else "trained")
    rows = [("checkpoint", done.checkpoint or "none written")]
    if done.phase_steps:
        rows.append(("steps", ", ".join(f"{p} {n:,}" for p, n in done.phase_steps.items())))
    if done.resumed_from and not finished:
        rows.append(("resumed from", done.resumed_from))
    where = "in process" if done.workers == 1 else f"on {count(done.workers, 'Ray Train worker')}"
    if done.train_seconds is not None and not finished:
        where = f"{duration(done.train_seconds)} {where}"
    board = "" if "://" in out else f" (TensorBoard: tensorboard --logdir {out}/tensorboard)"
    rows += [("time", where), ("metrics", f"{out}/metrics.jsonl{board}")]
    grid = key_values(title, rows)
    grid.caption = (f"next: s2dit sample --checkpoint {out} --prompt TEXT (on the analytic "
                    f"teacher also: s2dit eval --checkpoint {out})")
    return grid


def _eval(args: argparse.Namespace) -> int:
    from pipeline.eval import evaluate_checkpoint, format_report, save_report
    from student_train.checkpoint import latest_checkpoint

    checkpoint = latest_checkpoint(args.checkpoint) or args.checkpoint
    with working("eval") as step:
        step(0, 0, f"teacher and student samples, {args.per_class} per class")
        report = evaluate_checkpoint(checkpoint, per_class=args.per_class, seed=args.seed,
                                     streaming=True if args.streaming else None,
                                     chunk_frames=args.chunk_frames, noise=args.noise,
                                     lengths=tuple(args.lengths),
                                     reference_cache=args.reference_cache,
                                     teacher_forced=args.teacher_forced, guidance=args.guidance,
                                     unseen=args.unseen, whole_clip=not args.streaming_only,
                                     stream_window=args.stream_window, stream_sink=args.stream_sink,
                                     lcha_window=lcha_window_for(args.lcha_window, max(args.lengths) > 1))
    print(format_report(report))
    if args.report:
        save_report(report, args.report)
    return 0


def _sample(args: argparse.Namespace) -> int:
    from pipeline.text_to_video import SampleConfig, generate

    record = generate(SampleConfig(
        checkpoint=args.checkpoint, prompts=args.prompt, out=args.out, seed=args.seed,
        steps=args.steps, full_step=args.full_step, streaming=args.streaming,
        chunk_frames=args.chunk_frames, video=args.video, fps=args.fps, device=args.device,
        dtype=args.dtype, teacher_source=args.teacher_source, guidance=args.guidance,
        length=args.length, stream_window=args.stream_window, stream_sink=args.stream_sink,
        lcha_window=lcha_window_for(args.lcha_window, args.length > 1)), log=print)
    print(f"first chunk: {record['first_chunk_s']}; per chunk (s): {record['chunk_s']}")
    print(json.dumps({**record["outputs"], "scores": record["scores"],
                      "video": record.get("video")}, indent=1))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train the student from a frozen cache",
                                  description="Student training stages.")
    stages = train.add_subparsers(dest="stage", required=True, metavar="STAGE")
    _register_kd(stages)
    _register_ar(stages)
    _register_eval(subparsers)
    _register_sample(subparsers)


def _register_kd(stages: argparse._SubParsersAction) -> None:
    kd = stages.add_parser("kd", help="stage 1: 2-in-1 distillation -> S2DiT-KD",
                           description="Knowledge distillation (d = 0) plus step distillation "
                                       "(d > 0) from a teacher cache; resumes from the newest "
                                       "checkpoint under --out.")
    kd.add_argument("--cache", required=True, help="cache URL, optionally URL@generation or URL@tag")
    kd.add_argument("--out", required=True, help="output URL for checkpoints and metrics")
    kd.add_argument("--config", help="TOML training config ([train] table); flags override it")
    kd.add_argument("--steps", type=int, help="optimiser steps")
    kd.add_argument("--batch-size", type=int, dest="batch_size", help="trajectories per step")
    kd.add_argument("--seed", type=int, help="training seed (data order and rows)")
    kd.add_argument("--device", help="torch device (cpu, cuda)")
    kd.add_argument("--layout-file", dest="layout_file",
                    help="the student architecture found by `s2dit search --out FILE` (its "
                         "layout, width, patch...; [train.model] keys override single fields)")
    kd.add_argument("--workers", type=int, default=1,
                    help="Ray Train DDP workers (gloo on CPU; one GPU each when device is cuda)")
    kd.add_argument("--max-failures", type=int, default=0, dest="max_failures",
                    help="with --workers: restarts of the worker group after a worker or node "
                         "dies, each resuming from the newest checkpoint (default 0)")
    _add_knobs(kd, "train", "default 1e-3", "model.dim=64")
    kd.set_defaults(func=_train_kd)


def _register_ar(stages: argparse._SubParsersAction) -> None:
    ar = stages.add_parser(
        "ar", help="stage 2: self-forcing -> S2DiT-AR (streaming, few-step)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Self-forcing from an S2DiT-KD checkpoint: the block-causal student generates "
                    "chunks of latent frames with its own finished chunks as context, on the KD "
                    "few-step schedule, with a gradient at a random exit step. Losses: DMD (real "
                    "score = the frozen KD model, fake score = a critic trained online) plus "
                    "regression of the rollout from a trajectory's cached noise to its cached x0. "
                    "No teacher runs. Resumes from the newest checkpoint under --out.",
        epilog="example:\n  s2dit train ar --init runs/kd --cache runs/demo/cache@train "
               "--out runs/ar --config configs/ar_demo.toml\n\n"
               "Then score it in streaming mode: s2dit eval --checkpoint runs/ar")
    ar.add_argument("--init", required=True,
                    help="S2DiT-KD checkpoint folder, or a KD training output URL (its newest checkpoint)")
    ar.add_argument("--cache", required=True, help="cache URL (URL@generation or URL@tag) of the "
                                                   "same teacher as the KD checkpoint")
    ar.add_argument("--out", required=True, help="output URL for checkpoints and metrics")
    ar.add_argument("--config", help="TOML config ([train_ar] table); flags override it")
    ar.add_argument("--workers", type=int, default=1,
                    help="Ray Train workers; each rolls out batch_size / workers (gloo on CPU; "
                         "one GPU each when device is cuda)")
    ar.add_argument("--max-failures", type=int, default=0, dest="max_failures",
                    help="with --workers: restarts after a worker or node dies, each resuming "
                         "from the newest checkpoint (default 0)")
    ar.add_argument("--steps", type=int,
                    help="DMD generator steps, after the --causal-steps of the causal phase "
                         "(checkpoints are numbered by both)")
    ar.add_argument("--causal-steps", type=int, dest="causal_steps",
                    help="steps of the causal phase first (teacher forcing on the cache; 0: none, "
                         "DMD starts from the bidirectional KD model)")
    ar.add_argument("--batch-size", type=int, dest="batch_size", help="rollouts per generator step")
    ar.add_argument("--chunk-frames", type=int, dest="chunk_frames",
                    help="latent frames per streaming chunk (default: the KD model's)")
    ar.add_argument("--seed", type=int, help="training seed (data order, exits, re-noising)")
    ar.add_argument("--device", help="torch device (cpu, cuda)")
    _add_knobs(ar, "train_ar", "of the DMD generator; causal_lr is the causal phase's",
               "critic_steps=2")
    ar.set_defaults(func=friendly_errors(_train_ar, ValueError, FileNotFoundError))


def _register_eval(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser("eval", help="score a checkpoint with the analytic teacher",
                               description="Held-out seeds of trained classes and unseen attribute "
                                           "combinations; student 4-step and full-step vs teacher, "
                                           "and for S2DiT-AR (or with --streaming) the 4-step "
                                           "sampler run chunk by chunk.")
    ev.add_argument("--checkpoint", required=True, help="checkpoint folder or training output URL")
    ev.add_argument("--per-class", type=int, default=24,
                    help="samples per class (reported figures: 96 or more)")
    ev.add_argument("--noise", choices=("report", "tune"), default="report",
                    help="held-out noise base: 'report' for figures you report, 'tune' for recipe "
                         "decisions (disjoint seeds; default report)")
    ev.add_argument("--lengths", type=int, nargs="+", default=[1], metavar="M",
                    help="stream at these multiples of the trained clip length (e.g. 1 2 4)")
    ev.add_argument("--seed", type=int, default=0, help="held-out seed draw")
    ev.add_argument("--report", help="write the JSON report here")
    ev.add_argument("--streaming", action="store_true",
                    help="also sample chunk by chunk with the streaming state (always on for an "
                         "S2DiT-AR checkpoint: student_ar_4step_streaming)")
    ev.add_argument("--streaming-only", action="store_true", dest="streaming_only",
                    help="score only the streaming rows (no whole-clip student_4step and "
                         "student_fullstep_grid): an S2DiT-AR student's figures, in about two "
                         "thirds of the time")
    ev.add_argument("--chunk-frames", type=int, dest="chunk_frames",
                    help="latent frames per streaming chunk (default: the model's)")
    ev.add_argument("--reference-cache", dest="reference_cache", metavar="DIR",
                    help="keep the teacher's samples here for the next checkpoint of the same task "
                         "and noise ('off': none; default $S2DIT_EVAL_CACHE, else "
                         "~/.cache/s2dit/eval_reference)")
    ev.add_argument("--teacher-forced", dest="teacher_forced", type=_frames_or_auto, metavar="N|auto",
                    help="also the diagnostic row <streaming row>_forced<N>: frames 0..N-1 are the "
                         "teacher's reference sample committed as context, the student streams "
                         "the rest (exposure bias vs a biased conditional); 'auto': the memory "
                         "task's first frame after the gap")
    ev.add_argument("--guidance", type=float, default=1.0,
                    help="classifier-free guidance of the student's samples (default 1: off; "
                         "needs a student trained with cond_dropout)")
    ev.add_argument("--unseen", choices=("all", "report", "validation"), default="all",
                    help="the unseen classes scored: all (default), the 'report' subset for "
                         "figures, or the disjoint 'validation' subset for recipe decisions")
    _add_long_stream_args(ev, "when --lengths has one > 1")
    ev.set_defaults(func=_eval)


def _frames_or_auto(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of latent frames or 'auto', got {value!r}") from None


def _add_long_stream_args(parser: argparse.ArgumentParser, longer: str) -> None:
    """What a stream longer than the trained clip keeps of its past (student_train/model/bounded.py;
    BENCHMARKS "Bounded memory"); streaming only. ``longer``: when the command streams longer."""
    parser.add_argument("--stream-window", dest="stream_window", type=frames_or_trained, metavar="W|trained",
                        help="constant memory however long the stream: every SSA block keeps the last W "
                             "chunks and a sink (--stream-sink); 'trained': the clip's chunks minus 2 "
                             "(every distance one training had). Costs recall past the trained length")
    parser.add_argument("--stream-sink", dest="stream_sink", choices=("first", "adjacent", "none"),
                        default="first",
                        help="with --stream-window, the first chunk kept as an attention sink: at its "
                             "'first' place (frame 0, default: the least recall lost on the mean), "
                             "re-positioned 'adjacent' to the window (StreamingLLM; the most lost), or "
                             "'none'")
    add_lcha_window_arg(parser, longer)


def add_lcha_window_arg(parser: argparse.ArgumentParser, longer: str) -> None:
    """``--lcha-window W|trained|off`` (eval, sample, export): student_train/model/bounded.py;
    unset, ``lcha_window_for`` makes it "trained" for a stream longer than the trained clip
    (``longer`` says when that is, in the command's own flags)."""
    parser.add_argument("--lcha-window", dest="lcha_window", type=lcha_window_arg, metavar="W|trained|off",
                        help="LCHA's streaming sums over the first chunk and the last W chunks only "
                             "('trained': the clip's chunks minus 2; 'off': every chunk, as trained): past "
                             "the trained length the first chunk's share otherwise dilutes (BENCHMARKS "
                             "\"Bounded memory and the 4x fade\": 4x recall 0.79 -> 0.89 on 3 seeds, at the "
                             f"same cost per chunk). Default: 'trained' {longer}, else off; the trained "
                             "length's samples are the same either way (to the last bits); a model "
                             "without LCHA blocks is unchanged")


def lcha_window_arg(value: str) -> int | str:
    return value if value == "off" else frames_or_trained(value)


def lcha_window_for(asked: int | str | None, longer: bool) -> int | str | None:
    """The LCHA window a command streams with: as asked ("off": None, as trained), else
    "trained" for a stream longer than the trained clip."""
    if asked is None:
        return "trained" if longer else None
    return None if asked == "off" else asked


def frames_or_trained(value: str) -> int | str:
    if value == "trained":
        return value
    try:
        window = int(value)
    except ValueError:
        window = -1
    if window < 0:
        raise argparse.ArgumentTypeError(f"a number of past chunks >= 0 or 'trained', got {value!r}")
    return window


def _register_sample(subparsers: argparse._SubParsersAction) -> None:
    sa = subparsers.add_parser(
        "sample", help="text to video: sample a student checkpoint for prompts",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Sample S2DiT-KD or S2DiT-AR for prompts: text in, video out.\n\n"
            "Prompts are encoded by the text encoder of the teacher that made the checkpoint's\n"
            "cache (read from its manifest): the analytic table, or Wan 2.2's UMT5 (loaded with\n"
            "the VAE, without the experts). S2DiT-AR samples chunk by chunk by default.\n\n"
            "Writes, each atomically (any fsspec URL):\n"
            "  OUT.npy            latents (B, C, F, H, W) float32\n"
            "  OUT.mp4            one per prompt (OUT.0.mp4, OUT.1.mp4, ... for several); Wan:\n"
            "                     VAE-decoded chunk by chunk, (F-1)*4+1 frames of H*8 x W*8;\n"
            "                     analytic: the latent-to-RGB preview\n"
            "  OUT.png            analytic only: preview strip (and oracle scores are printed)\n"
            "  OUT.json           the resolved settings (checkpoint, cache generation, prompts,\n"
            "                     seed, sigmas, streaming, fps), written last"),
        epilog="examples:\n"
               "  s2dit sample --checkpoint runs/ar --prompt 'a red ring moving left' --out runs/sample\n"
               "  s2dit sample --checkpoint s3://bucket/wan-kd --prompt 'a cat running through a "
               "city at night' \\\n      --teacher-source /models/Wan2.2-T2V-A14B-Diffusers --seed 7 "
               "--out s3://bucket/samples/cat")
    sa.add_argument("--checkpoint", required=True, help="checkpoint folder or training output URL")
    sa.add_argument("--prompt", action="append", required=True, help="a prompt (repeatable)")
    sa.add_argument("--steps", type=int,
                    help="sampling steps (default: the checkpoint's few-step schedule; with "
                         "--full-step, the cache's whole sigma grid); other counts: uniform sigmas")
    sa.add_argument("--full-step", action="store_true", help="d = 0 (instantaneous velocity)")
    sa.add_argument("--guidance", type=float, default=1.0,
                    help="classifier-free guidance (default 1: off; needs a student trained "
                         "with cond_dropout)")
    sa.add_argument("--streaming", action=argparse.BooleanOptionalAction, default=None,
                    help="chunk by chunk with the streaming state (default: on for S2DiT-AR, off "
                         "for S2DiT-KD)")
    sa.add_argument("--chunk-frames", type=int, dest="chunk_frames",
                    help="latent frames per streaming chunk (default: the model's)")
    sa.add_argument("--length", type=int, default=1, metavar="M",
                    help="stream M times the trained clip's frames (a longer video; streaming "
                         "only; past the trained length quality falls, BENCHMARKS)")
    _add_long_stream_args(sa, "with --length > 1")
    sa.add_argument("--seed", type=int, default=0, help="noise seed (recorded in OUT.json)")
    sa.add_argument("--out", default="sample", help="output prefix, any fsspec URL (default: sample)")
    sa.add_argument("--video", action=argparse.BooleanOptionalAction, default=True,
                    help="write MP4s (default: on)")
    sa.add_argument("--fps", type=float, help="video frame rate (default: Wan 16, analytic 4)")
    sa.add_argument("--device", default="cpu", help="torch device for student, text encoder and VAE")
    sa.add_argument("--dtype", default="float32",
                    help="student and VAE compute dtype (float32, bfloat16, float16; fp32 on CPU)")
    sa.add_argument("--teacher-source", dest="teacher_source",
                    help="Wan 2.2 diffusers folder or hub id to load the text encoder and VAE from "
                         "(default: where the cache's job loaded the teacher; must be the same "
                         "weights)")
    sa.set_defaults(func=_sample)  # bad input: `error: ...` and exit 2 (pipeline.cli.main)
