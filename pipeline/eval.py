"""Score a student checkpoint with the analytic teacher (the quality oracle of DESIGN 4.3).

Held-out prompts: the cache's trained prompts with seeds never cached (same classes, new
noise), and, reported apart, attribute combinations the cache never saw. Both the student
(4-step with its jump size, and full-step with d = 0 on the cache's sigma grid) and the
teacher's own few-step and full-step Euler, and its few-step UniPC (a strong solver, no
training), are scored on the same noise. Streaming scores (S2DiT-AR by default, a KD model on
request) run the few-step sampler chunk by chunk with the streaming state, each finished chunk
committed clean as the next one's context, at the trained clip length and, with ``lengths``,
at multiples of it (the tasks are procedural in length).

Every row says its ``role``:
- ``"reference"``: the teacher's full-step samples (``teacher_fullstep``, ``teacher_fullstep_{m}x``),
  what the other rows are gated against. Its ``gate`` is the same Gate measured against itself
  (``gate["against"] == "itself"``): the absolute checks (adherence, coverage, mode TV, recall,
  branch) are real, the relative ones (amplitude, ghost, dispersion) hold by definition;
- ``"baseline"``: the teacher's few-step Euler (``teacher_{N}step``) and UniPC
  (``teacher_{N}step_unipc``: diffusers' UniPCMultistepScheduler on the teacher's own sigma
  grid, teacher_jobs/teachers/flow_solvers.py), and ``"student"``: the student's rows, each
  gated against the reference from the same noise (``gate["against"]`` names its key: paired
  fidelity, amplitude, ghost and dispersion bounds);
- ``"diagnostic"``: scored and gated like a student row, never part of a pass/fail headline.
  ``teacher_forced`` = N adds ``<streaming row>_forced<N>`` at 1x: frames 0..N-1 are the
  reference's own, committed as context as finished chunks are, the student streams the rest
  from the same noise. Against the plain streaming row it tells exposure bias (the student's
  own past leads it astray) from a bias of its conditional (wrong even given the true past).

The teacher's samples are sampled once per task and noise, never per checkpoint
(pipeline.eval_reference: in memory, and on disk under ``reference_cache`` / S2DIT_EVAL_CACHE).

Two disjoint noise bases: ``noise="report"`` for the figures a run reports, ``noise="tune"``
for recipe decisions, so that no recipe is ever chosen on the noise it is reported on.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import torch

from cache_schema import CacheReader
from cache_schema.noise import batch_noise
from cache_schema.sample_id import make_sample_id
from pipeline.eval_reference import ReferenceStore, resolve_dir, teacher_samples, with_steps
from pipeline.eval_unseen import UNSEEN_KEYS, NamingOracle, keep_errors, unseen_set, with_guidance
from student_train.stages import stage_of_checkpoint
from student_train.student import StudentCheckpoint
from teacher_jobs.teachers.analytic import AnalyticTeacher
from teacher_jobs.teachers.analytic_errors import format_errors
from teacher_jobs.teachers.analytic_score import Gate, reference_stats_of, verdict
from teacher_jobs.teachers.registry import open_sampling_side

SEED_BASES = {"report": 1_000_000, "tune": 5_000_000}  # cached seeds are small corpus counters
HELD_OUT_SEED_BASE = SEED_BASES["report"]
SEED_SPAN = 10**6  # each base draws from [base, base + span): the bases never overlap


def analytic_teacher_of(fingerprint: dict[str, Any]) -> AnalyticTeacher:
    """The oracle of the teacher that made a cache (the registry's sampling side); a teacher
    without one cannot be scored."""
    oracle = open_sampling_side(fingerprint).oracle
    if oracle is None:
        raise ValueError(f"scoring needs a teacher with an oracle (the analytic teacher); this "
                         f"cache was made by {fingerprint.get('teacher')!r}")
    return oracle


def load_student(checkpoint_url: str, *, ema: bool = True):
    """(model, state) of a checkpoint (StudentCheckpoint for everything else)."""
    student = StudentCheckpoint.load(checkpoint_url, ema=ema)
    return student.model, student.state


def trained_context_sigma(state: dict[str, Any]) -> float:
    """The noise level the checkpoint's stage committed finished chunks at (its registered
    TrainingStage says: S2DiT-AR's configured ``context_sigma``, KD's 0)."""
    return stage_of_checkpoint(state).context_sigma(state.get("config", {}))


ROLES = ("reference", "baseline", "student", "diagnostic")
# the few-step teacher row a reviewer asks for beside Euler's (key suffix, and as people read it)
STRONG_SOLVER, STRONG_SOLVER_TITLE = "unipc", "UniPC"


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Noise:
    """What the teacher's samples of one prompt set depend on besides the teacher."""

    prompts: list[str]
    seeds: list[int]
    digest: str  # the cache's fingerprint digest (sample ids)
    global_seed: int
    store: ReferenceStore

    def teacher(self, teacher: AnalyticTeacher, steps: int, solver: str = "euler") -> np.ndarray:
        config = dataclasses.replace(with_steps(teacher.config, steps), solver=solver)
        return teacher_samples(config, self.prompts, self.seeds,
                               fingerprint_digest=self.digest, global_seed=self.global_seed,
                               store=self.store)


def _reference_row(teacher: AnalyticTeacher, x0: np.ndarray, prompts, chunk_frames: int) -> dict[str, Any]:
    """The teacher's full-step score, marked as the reference and gated against itself (not
    against the data's r = 1, which the teacher's sharper samples fail by design)."""
    scores = teacher.score(x0, prompts, chunk_frames=chunk_frames)
    scores["role"] = "reference"
    scores["dispersion_vs_reference"] = 1.0
    scores["gate"] = {**verdict(scores, Gate(), reference_stats_of(scores)), "against": "itself"}
    return scores


def _gated_row(teacher: AnalyticTeacher, x0: np.ndarray, prompts, role: str, reference_key: str,
               reference: tuple[np.ndarray, dict[str, Any]], chunk_frames: int) -> dict[str, Any]:
    """A baseline or student score, gated against ``reference`` (x0, its row) from the same noise."""
    ref_x0, ref = reference
    scores = teacher.score(x0, prompts, reference=ref_x0, reference_stats=reference_stats_of(ref),
                           chunk_frames=chunk_frames)
    scores["role"] = role
    scores["gate"]["against"] = reference_key
    return scores


def _score_set(teacher, student: StudentCheckpoint, noise_of: _Noise, *, streaming: str | None,
               chunk_frames: int, lengths: tuple[int, ...], forced: int | None,
               whole_clip: bool = True) -> dict[str, Any]:
    plan, prompts = student.plan, noise_of.prompts
    ids = [make_sample_id(p, s, noise_of.digest) for p, s in zip(prompts, noise_of.seeds)]
    few = len(plan["schedule_sigmas"]) - 1
    out: dict[str, Any] = {}
    ref_x0 = noise_of.teacher(teacher, teacher.num_steps)
    out["teacher_fullstep"] = _reference_row(teacher, ref_x0, prompts, chunk_frames)
    reference = (ref_x0, out["teacher_fullstep"])
    for name, solver in ((f"teacher_{few}step", "euler"), (f"teacher_{few}step_{STRONG_SOLVER}", STRONG_SOLVER)):
        out[name] = _gated_row(teacher, noise_of.teacher(teacher, few, solver), prompts, "baseline",
                               "teacher_fullstep", reference, chunk_frames)
    noise = torch.from_numpy(batch_noise(noise_of.global_seed, ids, teacher.latent_shape))
    text = teacher.encode_prompts(prompts)
    with torch.no_grad():
        whole_clip_rows = (("student_4step", plan["schedule_sigmas"], True),
                           ("student_fullstep_grid", plan["grid_sigmas"], False)) if whole_clip else ()
        for name, sigmas, jump in whole_clip_rows:
            x0 = student.sample(noise, text.emb, text.mask, sigmas, streaming=False, use_step_size=jump)
            out[name] = _gated_row(teacher, x0.numpy(), prompts, "student", "teacher_fullstep",
                                   reference, chunk_frames)
        if streaming:
            out.update(_streaming_scores(teacher, student, noise_of, ids, streaming, chunk_frames,
                                         lengths, text, forced))
    return out


def _streaming_scores(teacher, student, noise_of: _Noise, ids, name, chunk_frames, lengths,
                      text, forced: int | None) -> dict[str, Any]:
    """Chunk by chunk, each finished chunk committed as the next's context, at each length;
    longer clips are scored by the same task at that length (its teacher as the reference).
    ``forced``: also the teacher-forced row at 1x (the module's docstring)."""
    out = {}
    frames = teacher.latent_shape[1]
    prompts = noise_of.prompts
    for m in lengths:
        at = teacher if m == 1 else teacher.at_length(frames * m)
        ref_key = "teacher_fullstep" if m == 1 else f"teacher_fullstep_{m}x"
        ref_x0 = noise_of.teacher(at, at.num_steps)
        ref = _reference_row(at, ref_x0, prompts, chunk_frames)
        noise = torch.from_numpy(batch_noise(noise_of.global_seed, ids, at.latent_shape))
        with torch.no_grad():
            x0 = student.sample(noise, text.emb, text.mask, student.plan["schedule_sigmas"],
                                streaming=True, chunk_frames=chunk_frames)
        key = name if m == 1 else f"{name}_{m}x"
        out[key] = _gated_row(at, x0.numpy(), prompts, "student", ref_key, (ref_x0, ref), chunk_frames)
        if m != 1:
            out[ref_key] = ref
        elif forced is not None:
            x0 = student.sample(noise, text.emb, text.mask, student.plan["schedule_sigmas"], streaming=True,
                                chunk_frames=chunk_frames, forced=torch.from_numpy(ref_x0[:, :, :forced]))
            row = _gated_row(at, x0.numpy(), prompts, "diagnostic", ref_key, (ref_x0, ref), chunk_frames)
            out[f"{name}_forced{forced}"] = {**row, "teacher_forced_frames": forced}
    return out


def teacher_forced_frames(value: int | str | None, teacher: AnalyticTeacher, chunk_frames: int,
                          streaming: bool) -> int | None:
    """The frames a teacher-forced row takes from the reference: N, or "auto" = the task's
    first frame after the gap (visible + gap frames); None: no such row. Whole chunks, fewer
    than the clip's frames, and only beside a streaming row."""
    if value is None:
        return None
    if not streaming:
        raise ValueError("teacher_forced needs a streaming row: an S2DiT-AR checkpoint, or a KD "
                         "one with streaming=True (s2dit eval --streaming)")
    if value == "auto":
        if teacher.period is None:
            raise ValueError(f"teacher_forced 'auto' is the first frame after the gap, and the "
                             f"{teacher.config.task!r} task has no gap; give a number of frames")
        value = teacher.period.length
    if isinstance(value, bool) or not isinstance(value, int):  # a config value: ValueError like the rest
        raise ValueError(f"teacher_forced must be a number of latent frames or 'auto', got {value!r}")  # noqa: TRY004
    frames = teacher.latent_shape[1]
    if not 0 <= value < frames or value % chunk_frames:
        raise ValueError(f"teacher_forced = {value}: must be whole chunks of {chunk_frames} frames "
                         f"and fewer than the clip's {frames} (the student samples the rest)")
    return value


def _prompt_sets(teacher: AnalyticTeacher, cache_url: str, unseen_subset: str = "all"
                 ) -> tuple[dict[str, list[str]], int]:
    trained = sorted(set(CacheReader(cache_url).index().column("prompt").to_pylist()))
    by_class: dict[int, str] = {}
    for p in trained:
        by_class.setdefault(teacher.class_of(p), p)
    unseen = [f"a {c} {o} moving {m}" for i, (o, c, m) in enumerate(teacher.classes) if i not in by_class]
    sets = {"held_out_seeds": [by_class[c] for c in sorted(by_class)]}
    if unseen:  # all of them, or the "report" or "validation" subset (pipeline.eval_unseen)
        key, prompts = unseen_set(unseen, unseen_subset)
        sets[key] = prompts
    return sets, len(by_class)


def student_rows(streams: bool) -> str:
    """The prefix of a checkpoint's streaming rows: ``student_ar_`` when its stage streams
    (S2DiT-AR, the name score files have always carried), else ``student_`` (a KD model
    sampled causally). The one place that names them; readers find rows by it."""
    return "student_ar_" if streams else "student_"


def _check_options(noise: str, stream_window: int | str | None, whole_clip: bool) -> None:
    if noise not in SEED_BASES:
        raise ValueError(f"noise must be one of {sorted(SEED_BASES)}, got {noise!r}")
    if stream_window is not None and whole_clip:
        raise ValueError("a stream window bounds the streaming rows only: score them alone "
                         "(whole_clip=False, s2dit eval --streaming-only)")


def _options_said(student: StudentCheckpoint, unseen: str | None, guidance: float,
                  stream_sink: str | None) -> dict[str, Any]:
    """What a report says of its options where not at their defaults: the unseen subset (when
    the unseen classes were split), guidance, the stream's bound (``stream_sink``: None when the
    stream was not bounded)."""
    said: dict[str, Any] = {}
    if unseen is not None:
        said["unseen_subset"] = unseen
    if guidance != 1.0:
        said["guidance"] = guidance
    if stream_sink is not None:
        said["stream_window"], said["stream_sink"] = student.model.config.ssa_window, stream_sink
    if student.model.config.lcha_window is not None:
        said["lcha_window"] = student.model.config.lcha_window
    return said


def evaluate_checkpoint(checkpoint_url: str, *, per_class: int = 24, seed: int = 0,
                        streaming: bool | None = None, chunk_frames: int | None = None,
                        lengths: tuple[int, ...] = (1,), noise: str = "report",
                        reference_cache: str | None = None,
                        teacher_forced: int | str | None = None, guidance: float = 1.0,
                        unseen: str = "all", whole_clip: bool = True,
                        stream_window: int | str | None = None, stream_sink: str = "first",
                        lcha_window: int | str | None = None) -> dict[str, Any]:
    """Scores of a KD or AR checkpoint. ``streaming`` (default: on for a checkpoint whose stage
    streams, S2DiT-AR) adds the few-step sampler run chunk by chunk: ``student_ar_4step_streaming``
    for an AR checkpoint, ``student_4step_streaming`` for a KD model sampled causally, with
    ``_{m}x`` keys for each longer length m in ``lengths``. ``noise``: "report" or "tune".
    ``reference_cache``: the directory of the teacher's samples kept across evaluations ("off":
    none; default S2DIT_EVAL_CACHE, else ~/.cache/s2dit/eval_reference). ``teacher_forced``:
    N frames or "auto" (``teacher_forced_frames``) adds the diagnostic row
    ``<streaming name>_forced<N>``. ``guidance`` != 1: the student rows sampled with
    classifier-free guidance (a student trained with cond_dropout). ``unseen``: the held-out
    classes scored, "all", "report" or "validation" (pipeline.eval_unseen); their student rows
    name the errors per class (``errors``). ``whole_clip=False``: no whole-clip student rows
    (``student_4step``, ``student_fullstep_grid``), for a streaming student whose figures are its
    streaming rows (the full-step grid alone costs about what the 4x stream does).
    ``stream_window``, ``stream_sink``: the streaming rows (only: ``whole_clip=False``) with
    constant memory; ``lcha_window``: LCHA's streaming sums windowed (both as
    student_train/model/bounded.py long_stream takes them)."""
    _check_options(noise, stream_window, whole_clip)
    student = StudentCheckpoint.load(checkpoint_url).long_stream(
        ssa_window=stream_window, sink=stream_sink, lcha_window=lcha_window)
    few = len(student.plan["schedule_sigmas"]) - 1
    is_ar = student.streams
    streaming_name = None
    if streaming or (streaming is None and is_ar):
        streaming_name = f"{student_rows(is_ar)}{few}step_streaming"
    manifest = student.trained_manifest()
    teacher = analytic_teacher_of(manifest.fingerprint)
    sets, trained_classes = _prompt_sets(teacher, student.manifest_info["cache_url"], unseen)
    student = with_guidance(student, guidance, teacher, manifest.fingerprint)
    trained = {teacher.class_of(p) for p in sets["held_out_seeds"]}
    rng = np.random.default_rng(seed)
    store = ReferenceStore(resolve_dir(reference_cache))
    chunk = chunk_frames or student.model.config.chunk_frames
    forced = teacher_forced_frames(teacher_forced, teacher, chunk, streaming_name is not None)
    if not whole_clip and streaming_name is None:
        raise ValueError("whole_clip=False leaves nothing to score for a model that does not stream: "
                         "keep the whole-clip rows, or stream it (streaming=True, s2dit eval --streaming)")
    report: dict[str, Any] = {"checkpoint": checkpoint_url, "step": student.step, "stage": student.stage,
                              "trained_classes": trained_classes, "per_class": per_class,
                              "noise": noise, "lengths": list(lengths), "task": teacher.config.task}
    report.update(_options_said(student, unseen if len(sets) > 1 else None, guidance,
                                stream_sink if stream_window is not None else None))
    for name, class_prompts in sets.items():
        prompts = [p for p in class_prompts for _ in range(per_class)]
        seeds = list(SEED_BASES[noise] + rng.permutation(SEED_SPAN)[: len(prompts)])
        noise_of = _Noise(prompts=prompts, seeds=[int(s) for s in seeds], digest=manifest.fingerprint_digest,
                          global_seed=int(manifest.fingerprint["global_seed"]), store=store)
        oracle = NamingOracle(teacher, trained) if name in UNSEEN_KEYS.values() else teacher
        report[name] = keep_errors(_score_set(oracle, student, noise_of, streaming=streaming_name,
                                              chunk_frames=chunk, lengths=tuple(lengths), forced=forced,
                                              whole_clip=whole_clip))
    return report


def _line(model_name: str, s: dict[str, Any]) -> str:
    line = (f"    {model_name:32s} adherence {s['adherence']:.3f}  coverage {s['coverage']:.3f}"
            f"  dispersion {s['dispersion_ratio']:.3f}  amp {s['amplitude_bias']:+.3f}"
            f"  ghost {s['ghost_energy']:.3f}  mode TV {s['mode_tv']:.3f}")
    if "contrast" in s:  # scores from before session 15 have none
        line += f"  contrast {s['contrast']:.2f}"
    if "recall" in s:
        line += f"  recall {s['recall']:.3f}  went on {s['branch_rate']:.2f}"
    gate = s.get("gate", {})
    role = s.get("role", "student" if model_name.startswith("student") else None)
    if role == "reference":
        line += "  (reference: the other rows are gated against it)"
    elif role is not None:
        line += "  gate " + ("PASS" if gate.get("passed") else f"FAIL ({', '.join(gate.get('failed', []))})")
    if role == "diagnostic":
        n = s.get("teacher_forced_frames")
        line += (f"  (diagnostic: frames 0-{n - 1} the reference's" if n else "  (diagnostic") + ", not in the verdict)"
    return line


def format_report(report: dict[str, Any]) -> str:
    head = (f"checkpoint {report['checkpoint']} ({report.get('stage', 'kd').upper()} step "
            f"{report['step']}, {report['trained_classes']} trained classes, "
            f"{report['per_class']} samples per class, {report.get('noise', 'report')} noise"
            + (f", unseen: {report['unseen_subset']}" if report.get("unseen_subset", "all") != "all" else "")
            + (f", guidance {report['guidance']}" if "guidance" in report else "")
            + (f", streamed with SSA window {report['stream_window']}, sink "
               f"{report.get('stream_sink', 'first')}" if "stream_window" in report else "")
            + (f", LCHA window {report['lcha_window']}" if "lcha_window" in report else "")
            + ")")
    lines = [head]
    for set_name in ("held_out_seeds", *dict.fromkeys(UNSEEN_KEYS.values())):
        if set_name not in report:
            continue
        lines.append(f"  {set_name}:")
        for model_name, s in report[set_name].items():
            lines.append(_line(model_name, s))
            lines.extend(format_errors(s.get("errors", [])))
    return "\n".join(lines)


def save_report(report: dict[str, Any], url: str) -> None:
    import fsspec

    with fsspec.open(url, "w") as handle:
        json.dump(report, handle, indent=1)
