"""``[job.teacher] kind = "wan"``: Wan 2.2-T2V-A14B (and the single-expert Wan checkpoints
diffusers' ``WanPipeline`` runs) through diffusers.

The driver reads the checkpoint as files (configs, tokenizer, safetensors digests; wan_files.py)
and never instantiates a model; the actor loads it, checks that the files it loaded are the
fingerprinted ones, and runs the recorder. The tiny random-weight teacher (``wan-tiny``) has
no files: its weights are defined by code, so the driver builds it (tiny) to digest them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from cache_schema import diff_fingerprints
from cache_schema.typed_config import Limits, between, one_of

from .registry import register_teacher
from .spec import DriverPlan, TeacherSettings, VideoSize
from .video_limits import VideoLimits
from .wan import DTYPES, HUB_ID, OFFLOAD, SIGMA_GRIDS, WanTeacher, solver_of, wan_fingerprint
from .wan_files import has_two_experts
from .wan_limits import wan_geometry, wan_limits

# The official Wan 2.2 negative prompt: wan/configs/shared_config.py, `sample_neg_prompt`
# (github.com/Wan-Video/Wan2.2), used by every official Wan 2.2 task.
OFFICIAL_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，"
    "低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，"
    "形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走")
TINY = "tiny-random"  # source of the tiny random-weight teacher (tests, offline demo)


@register_teacher
@dataclass(kw_only=True, slots=True)
class WanSettings(TeacherSettings):
    kind: ClassVar[str] = "wan"
    LIMITS: ClassVar[Limits] = {
        "dtype": one_of(*sorted(DTYPES)), "vae_dtype": one_of(*sorted(DTYPES)),
        "offload": one_of(*OFFLOAD), "boundary": between(0.0, 1.0, lo_open=True, hi_open=True),
        "max_text_len": between(1, 65_536), "sigma_grid": one_of(*SIGMA_GRIDS),
    }
    source: str = HUB_ID  # local diffusers folder, hub id, or "tiny-random"
    revision: str | None = None  # hub commit to pin (a branch or tag is resolved to its commit)
    # A copy made by `s2dit teacher stage` (object-store URL or shared folder): when set, the
    # driver and every actor load from it alone (never the hub), at `revision`, a commit sha;
    # `source` then only says what was staged. "" (the flag's way to unset it) means None.
    staged: str | None = None
    dtype: str = "bfloat16"  # experts and text encoder (the official param_dtype and t5_dtype)
    vae_dtype: str = "float32"  # as WanPipeline keeps it
    solver: str = "auto"  # auto: the checkpoint's own scheduler; euler | unipc
    steps: int = 40
    shift: float = 12.0
    # "diffusers" (WanPipeline's grid: the teacher equals stock WanPipeline) or "official" (Wan's
    # own generate.py: linspace(0.999, 0), integer timesteps); wan.SIGMA_GRIDS says how they differ
    sigma_grid: str = "diffusers"
    guidance: tuple[float, float] = (4.0, 3.0)
    boundary: float | None = None  # None: the checkpoint's boundary_ratio
    negative_prompt: str = OFFICIAL_NEGATIVE_PROMPT
    offload: str = "none"  # none | expert (one expert on the GPU) | model (one model: wan_offload)
    micro_batch: int = 1
    # None: torch SDPA; a diffusers backend by name ("_native_cudnn", "flash", "_flash_3"), probed
    # on the actor's device and refused there when it cannot run (wan_attention.py)
    attention_backend: str | None = None
    max_text_len: int = 512  # the official text_len

    def __post_init__(self) -> None:
        TeacherSettings.__post_init__(self)  # types and ranges (LIMITS) of every field
        self.staged = self.staged or None
        if self.staged is not None:
            from ..staging import check_commit

            check_commit(self.revision, "[job.teacher] revision (staged weights)")
        if self.solver != "auto":
            solver_of(self.solver, "")
        if self.attention_backend is not None:  # probed on the actor's device (wan_attention)
            from .wan_attention import check_backend_name

            check_backend_name(self.attention_backend)

    @classmethod
    def from_spec(cls, spec: str) -> dict[str, Any] | None:
        if spec == "wan-tiny":  # the test preset: fp32 (bf16 is ~100x slower on CPU), 16 tokens
            return {"source": TINY, "dtype": "float32", "max_text_len": 16, "negative_prompt": "",
                    "steps": 6, "shift": 3.0}
        if spec.startswith("wan:"):
            return {"source": spec[4:]}
        return None

    # -- actor side -----------------------------------------------------------------------------
    def teacher_args(self, video: VideoSize, device: str) -> dict[str, Any]:
        return {"num_steps": self.steps, "shift": self.shift, "guidance": self.guidance,
                    "height": video.height, "width": video.width, "frames": video.frames, "solver": self.solver,
                    "device": device, "dtype": self.dtype, "vae_dtype": self.vae_dtype,
                    "max_text_len": self.max_text_len, "offload": self.offload, "boundary": self.boundary,
                    "attention_backend": self.attention_backend, "sigma_grid": self.sigma_grid}

    def build(self, video: VideoSize, *, device: str) -> WanTeacher:
        if self.source == TINY:
            return WanTeacher.tiny(**self.teacher_args(video, device))
        if self.staged is not None:  # downloaded and checked once per node, then loaded
            from ..staging import materialize

            copy = materialize(self.staged, revision=self.revision)
            return WanTeacher.from_checkpoint(_staged_checkpoint(copy), **self.teacher_args(video, device))
        return WanTeacher.from_pretrained(self.source, revision=self.revision,
                                          **self.teacher_args(video, device))

    def check_loaded(self, teacher: WanTeacher, fingerprint: dict[str, Any]) -> None:
        """Refuse to produce samples from weights or libraries the job did not fingerprint."""
        expected = fingerprint.get("checkpoint", {}).get("files", {})
        bad = [f"{rel}: sha256 {teacher.loaded_files.get(rel, 'missing')[:12]}, job {digest[:12]}"
               for rel, digest in sorted(expected.items())
               if rel.endswith(".safetensors") and teacher.loaded_files.get(rel) != digest]
        if bad:
            raise ValueError(f"the actor loaded weights that differ from the job's fingerprint "
                             f"({self.source}): {'; '.join(bad)}. Use the same checkpoint on the "
                             "driver and every GPU node (pin revision for hub ids)")
        mine = teacher.fingerprint()
        theirs = {k: fingerprint[k] for k in mine if k in fingerprint}
        diff = diff_fingerprints(theirs, mine)
        if diff:
            raise ValueError("this actor's teacher is not the one the job fingerprinted "
                             "(job -> actor):\n  " + "\n  ".join(diff[:20]))

    # -- driver side ----------------------------------------------------------------------------
    def driver_plan(self, video: VideoSize) -> DriverPlan:
        if self.source == TINY:  # random weights defined by code: cheap to build and digest
            teacher = self.build(video, device="cpu")
            return DriverPlan(fingerprint=teacher.fingerprint(),
                              layout_args={"latent_shape": teacher.latent_shape,
                                               "num_steps": teacher.num_steps, "text_dim": teacher.text_dim,
                                               "max_text_len": teacher.max_text_len},
                              max_tokens=teacher.max_text_len, count_tokens=teacher.count_tokens)
        from .wan import checkpoint_record, count_wan_tokens, load_error_message
        from .wan_files import file_configs, library_versions, resolve_checkpoint

        if self.staged is not None:  # configs and tokenizer only: no weights, no hub
            from ..staging import small_files
            from .wan_files import is_weight

            ckpt = _staged_checkpoint(small_files(self.staged, revision=self.revision,
                                                  is_weight=is_weight))
        else:
            try:
                ckpt = resolve_checkpoint(self.source, self.revision)
            except (OSError, ValueError) as exc:
                raise RuntimeError(load_error_message(self.source, exc)) from None
        configs = file_configs(ckpt)
        shape, text_dim = self.check_checkpoint(configs, video)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(ckpt.folder / "tokenizer"))
        index = configs["model_index"]
        fp = wan_fingerprint(
            checkpoint=checkpoint_record(ckpt),
            configs=configs, solver=solver_of(self.solver, configs["scheduler"]["_class_name"]),
            shift=self.shift, steps=self.steps, guidance=self.guidance,
            boundary_ratio=self.boundary if self.boundary is not None else index.get("boundary_ratio"),
            expand_timesteps=bool(index.get("expand_timesteps", False)),
            resolution=(video.height, video.width, video.frames), dtype=self.dtype,
            vae_dtype=self.vae_dtype, max_text_len=self.max_text_len,
            attention_backend=self.attention_backend, libraries=library_versions(),
            sigma_grid=self.sigma_grid)
        return DriverPlan(fingerprint=fp, layout_args={"latent_shape": shape, "num_steps": self.steps,
                                                           "text_dim": text_dim, "max_text_len": self.max_text_len},
                          max_tokens=self.max_text_len,
                          count_tokens=lambda prompt: count_wan_tokens(tokenizer, prompt))

    def check_checkpoint(self, configs: dict[str, Any], video: VideoSize
                         ) -> tuple[tuple[int, int, int, int], int]:
        """(latent shape, text dim) of a checkpoint diffusers' WanPipeline runs; refuses others."""
        index = configs.get("model_index", {})
        if index.get("_class_name", "WanPipeline") != "WanPipeline":
            raise ValueError(f"{self.source} is a {index['_class_name']} checkpoint: only text-to-video "
                             "WanPipeline checkpoints are teachers here (Wan 2.2 T2V-A14B, TI2V-5B, Wan 2.1 T2V)")
        t = configs["transformer"]
        if t.get("image_dim"):
            raise ValueError(f"{self.source} has an image-conditioned transformer (image_dim set): "
                             "image-to-video checkpoints are not supported as teachers")
        two = has_two_experts(index)
        if two and index.get("boundary_ratio") is None and self.boundary is None:
            raise ValueError(f"{self.source} has two experts but no boundary_ratio: set boundary")
        if not two and self.boundary is not None:
            raise ValueError(f"{self.source} has a single transformer: boundary is for two-expert "
                             "checkpoints; leave it unset")
        wan_limits(configs, self.source).check(video)  # the checkpoint's own geometry
        g = wan_geometry(configs)
        vt, vs = g["temporal"], g["spatial"]
        shape = (int(t["in_channels"]), (video.frames - 1) // vt + 1, video.height // vs, video.width // vs)
        return shape, int(configs["text_encoder"]["d_model"])

    def video_limits(self, video: VideoSize) -> VideoLimits:
        """From the checkpoint's configs where they are at hand without the hub (the tiny
        teacher, a local folder, the shipped A14B configs), else diffusers' Wan defaults; the
        driver checks the resolved checkpoint's own configs again (check_checkpoint)."""
        if self.source == TINY:
            from .tiny_wan import tiny_configs

            return wan_limits(tiny_configs(), self.source)
        try:
            return wan_limits(self._offline_configs(), self.source)
        except (OSError, ValueError, KeyError):  # another hub id, or a folder not readable here
            return wan_limits({}, f"{self.source}, diffusers' Wan defaults")

    def memory_plan(self, video: VideoSize, *, gpu_memory_gb: float):
        """From the checkpoint's configs when it is a local folder, else the shipped public A14B
        configs (a hub id is planned offline; generate re-plans from the resolved files)."""
        from .wan_plan import plan_actor

        if self.source == TINY:
            return None
        configs = self._offline_configs()
        shape, _ = self.check_checkpoint(configs, video)
        return plan_actor(configs, latent_shape=shape, steps=self.steps, dtype=self.dtype,
                          vae_dtype=self.vae_dtype, offload=self.offload, micro_batch=self.micro_batch,
                          gpu_memory_gb=gpu_memory_gb)

    def _offline_configs(self) -> dict[str, Any]:
        """The checkpoint's configs without the hub: a local folder's files, or the shipped
        public A14B configs for its hub id."""
        from pathlib import Path

        from .wan_files import file_configs, resolve_local
        from .wan_plan import shipped_configs

        if Path(self.source).is_dir():
            return file_configs(resolve_local(self.source, hash_weights=False))
        if self.source != HUB_ID:
            raise ValueError(f"no shipped architecture for {self.source!r}: plan it from a local "
                             "copy (source = DIR)")
        return shipped_configs("t2v-a14b")

    def layout_estimate(self, video: VideoSize) -> dict[str, Any]:
        """Real checkpoints: the layout from the planned architecture, no hub access needed."""
        if self.source == TINY:
            return self.driver_plan(video).layout_args
        shape, text_dim = self.check_checkpoint(self._offline_configs(), video)
        return {"latent_shape": shape, "num_steps": self.steps, "text_dim": text_dim,
                "max_text_len": self.max_text_len}

    # -- sampling side --------------------------------------------------------------------------
    @classmethod
    def sampling_side(cls, fingerprint: dict[str, Any], *, source: str | None = None,
                      device: str = "cpu", dtype: str = "float32"):
        from .wan_sampling import WanSamplingSide

        return WanSamplingSide(cls.kind, fingerprint, source=source, device=device, dtype=dtype)

    @classmethod
    def build_direct(cls, values: dict[str, Any], **config: Any) -> WanTeacher:
        if values.get("source") == TINY:
            return WanTeacher.tiny(**config)
        return WanTeacher.from_pretrained(values["source"], **config)


def _staged_checkpoint(copy):
    """A staged copy (staging.StagedCopy) as the checkpoint the fingerprint records: the
    digest file's source, revision and file digests, and the digest file's own sha256."""
    from .wan_files import Checkpoint

    return Checkpoint(source=copy.record.source, revision=copy.record.revision, folder=copy.folder,
                      files=copy.record.sha256s(), staged=copy.digest)
