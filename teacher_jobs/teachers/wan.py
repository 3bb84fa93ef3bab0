"""Wan through diffusers: Wan 2.2-T2V-A14B (two experts split at ``boundary_ratio``, per-expert
guidance), and the single-expert forms diffusers' ``WanPipeline`` runs (Wan 2.1 T2V; Wan 2.2
TI2V-5B text-to-video with ``expand_timesteps``); flow shift, the checkpoint's own solver or
Euler/UniPC; our own loop over the pipeline's modules so every state and both velocities can be
recorded (DESIGN 4.2).

With the same initial noise, prompts, steps, shift and guidance pair, the final latent of this
loop equals stock ``WanPipeline(output_type="latent")`` run one prompt at a time (bit for bit
with Euler). The transformer and the text encoder see one sample per call, so a sample's bytes
do not depend on the micro-batch or on which prompts share it (batch invariance).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..hub import hub_hint, is_hub_id
from .base import CODE_VERSION, EncodedText, Teacher
from .flow_solvers import SOLVERS, flow_scheduler
from .spec import VideoSize
from .wan_limits import wan_limits
from .wan_offload import POLICIES, Residency

HUB_ID = "Wan-AI/Wan2.2-T2V-A14B-Diffusers"
OFFLOAD = POLICIES  # none | expert | model (wan_offload)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# The unshifted sigma grid before the flow shift (issue 27). "diffusers": what WanPipeline's
# schedulers build (UniPC: linspace(1, 1/1000, N + 1)[:-1], sigma 1 nudged to 1 - 1e-6), the
# default, so the teacher equals stock WanPipeline. "official": Wan's own FlowUniPCMultistep-
# Scheduler (github.com/Wan-Video/Wan2.2 wan/utils/fm_solvers_unipc.py, shift=1 at init):
# linspace(sigma_max 0.999, sigma_min 0, N + 1)[:-1], integer timesteps; at shift 12 and 40
# steps the last state before 0 is sigma 0.235 instead of 0.242, the first 0.99992 instead of 1.
SIGMA_GRIDS = ("diffusers", "official")


def weight_digest(module: torch.nn.Module) -> str:
    """sha256 over every tensor's name, shape, dtype and a strided sample of its values: cheap on
    a 14B model and changed by any retraining or swapped checkpoint."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().flatten()
        stride = max(1, flat.numel() // 4096)
        sample = flat[::stride].float().cpu().numpy()
        h.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        h.update(sample.tobytes())
    return h.hexdigest()


GENERATE_HINT = "pass --teacher wan:DIR; for a test run use --teacher wan-tiny"


def load_error_message(path_or_id: str, exc: Exception, then: str = GENERATE_HINT) -> str:
    """The one message for Wan weights that are not there (hub unreachable, wrong folder)."""
    text = (f"cannot load the Wan 2.2 pipeline from {path_or_id!r} "
            f"({type(exc).__name__}: {str(exc)[:300]})")
    if is_hub_id(path_or_id):
        return f"{text}. {hub_hint(path_or_id, exc, then)}"
    return (f"{text}. Without network access, download it where you have one "
            f"(`hf download {HUB_ID} --local-dir DIR`), copy DIR here and {then}")


def count_wan_tokens(tokenizer, prompt: str) -> int:
    """Tokens of ``prompt`` as the pipeline's text encoder sees it: after ``prompt_clean``
    (HTML entities, ftfy where installed, whitespace), with the end-of-sequence token."""
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    return len(tokenizer(prompt_clean(prompt), add_special_tokens=True).input_ids)


def solver_of(solver: str, scheduler_class: str) -> str:
    """``auto`` -> the solver of the checkpoint's own scheduler; refuses one we cannot record."""
    if solver == "auto":
        found = [name for name, cls in SOLVERS.items() if cls == scheduler_class]
        if not found:
            raise ValueError(f"the checkpoint's scheduler {scheduler_class} is not a flow solver this "
                             f"teacher records; set solver to one of {sorted(SOLVERS)}")
        return found[0]
    if solver not in SOLVERS:
        raise ValueError(f"solver must be auto or one of {sorted(SOLVERS)}, got {solver!r}")
    return solver


def wan_fingerprint(*, checkpoint: dict[str, Any], configs: dict[str, Any], solver: str, shift: float,
                    steps: int, guidance: tuple[float, float], boundary_ratio: float | None,
                    expand_timesteps: bool, resolution: tuple[int, int, int], dtype: str,
                    vae_dtype: str, max_text_len: int, attention_backend: str | None,
                    libraries: dict[str, str | None], sigma_grid: str = "diffusers") -> dict[str, Any]:
    """Everything that changes a Wan teacher's output; the driver (from files) and a loaded
    teacher (from what it loaded) build it with this one function."""
    from .wan_files import has_two_experts

    two_experts = has_two_experts(configs.get("model_index", {}))
    # the grid enters only when not the default: caches made before the setting keep their digest
    grid = {} if sigma_grid == "diffusers" else {"sigma_grid": sigma_grid}
    return {**grid, "teacher": "wan", "variant": ("two-expert" if two_experts else "single-expert")
            + ("+expand_timesteps" if expand_timesteps else ""),
            "checkpoint": checkpoint, "configs": configs, "libraries": libraries,
            "boundary_ratio": boundary_ratio, "solver": solver, "scheduler": SOLVERS[solver],
            "shift": float(shift), "steps": int(steps),
            "guidance": [float(g) for g in (guidance if two_experts else guidance[:1])],
            "resolution": list(resolution), "model_dtype": dtype, "vae_dtype": vae_dtype,
            "max_text_len": int(max_text_len), "attention_backend": attention_backend,
            "code_version": CODE_VERSION}


def encode_wan_prompts(pipe, prompts: list[str], *, max_text_len: int, device: torch.device,
                       dtype: torch.dtype) -> EncodedText:
    """UMT5 embeddings (B, max_text_len, D), zero past each prompt's tokens; shared by the
    teacher and by sampling a student, so both see the same text input."""
    # the pipeline's own seq_len: tokens of the cleaned prompt, truncated at max_text_len
    lengths = [min(count_wan_tokens(pipe.tokenizer, p), max_text_len) for p in prompts]
    # One prompt per encoder call, each distinct prompt once: the encoder always sees batch 1 at
    # the fixed padded length, so a prompt's embedding cannot depend on which prompts share its
    # call (batch invariance; GEMM kernels are chosen by shape). UMT5 is ~1/10^4 of a trajectory.
    rows: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for prompt in dict.fromkeys(prompts):
            rows[prompt] = pipe._get_t5_prompt_embeds(prompt=[prompt], max_sequence_length=max_text_len,
                                                      device=device, dtype=dtype)
    emb = torch.cat([rows[p] for p in prompts]) if prompts else torch.empty(0)
    return EncodedText(emb=emb, lengths=lengths, prompts=list(prompts))


def to_vae_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Undo the latents_mean/std normalisation the denoiser works in, op for op as
    ``WanPipeline`` does before its decode (so decoded frames match the stock pipeline's)."""
    device = next(vae.parameters()).device
    latents = latents.to(device, vae.dtype)
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(device, latents.dtype)
    std = 1.0 / torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(device, latents.dtype)
    return latents / std + mean


class WanTeacher(Teacher):
    name = "wan"

    def __init__(self, pipeline, *, checkpoint: dict[str, Any], num_steps: int = 40,
                 shift: float = 12.0, guidance: tuple[float, float] = (4.0, 3.0),
                 height: int = 480, width: int = 832, frames: int = 81, solver: str = "auto",
                 device: str = "cpu", dtype: str = "float32", vae_dtype: str = "float32",
                 max_text_len: int = 512, offload: str = "none", boundary: float | None = None,
                 attention_backend: str | None = None, loaded_files: dict[str, str] | None = None,
                 configs: dict[str, Any] | None = None, sigma_grid: str = "diffusers"):
        self.pipe, self.checkpoint = pipeline, checkpoint
        self.configs = configs if configs is not None else pipeline_configs(pipeline)
        self.loaded_files = loaded_files or {}  # sha256 of the weight files actually loaded
        self.two_experts = getattr(pipeline, "transformer_2", None) is not None
        if boundary is not None and not self.two_experts:
            raise ValueError("boundary is for two-expert checkpoints (Wan 2.2 A14B); this one has "
                             "a single transformer: leave boundary unset")
        self.boundary_ratio = boundary if boundary is not None else pipeline.config.boundary_ratio
        if self.two_experts and self.boundary_ratio is None:
            raise ValueError("a two-expert Wan checkpoint needs boundary_ratio (model_index.json) "
                             "or the boundary setting")
        self.expand_timesteps = bool(getattr(pipeline.config, "expand_timesteps", False))
        self.solver = solver_of(solver, type(pipeline.scheduler).__name__)
        self.num_steps, self.shift = num_steps, float(shift)
        if sigma_grid not in SIGMA_GRIDS:
            raise ValueError(f"sigma_grid must be one of {SIGMA_GRIDS}, got {sigma_grid!r}")
        self.sigma_grid = sigma_grid
        self.guidance = tuple(float(g) for g in guidance)
        self.height, self.width, self.frames = height, width, frames
        self.device, self.dtype = torch.device(device), torch.float32  # latents stay fp32
        self.model_dtype = self.pipe.transformer.dtype  # set at load (dtype=), as diffusers keeps
        # some submodules in fp32 that a later .to(dtype) would break
        self.dtype_name, self.vae_dtype = str(self.model_dtype).removeprefix("torch."), vae_dtype
        del dtype  # applied at load
        cfg = self.pipe.transformer.config
        vae_t = getattr(self.pipe, "vae_scale_factor_temporal", 4)
        vae_s = getattr(self.pipe, "vae_scale_factor_spatial", 8)
        # the loaded modules' own geometry: the same declaration the driver checked
        wan_limits({"transformer": dict(cfg), "vae": {"scale_factor_spatial": vae_s,
                                                      "scale_factor_temporal": vae_t}},
                   "this checkpoint").check(VideoSize(height=height, width=width, frames=frames))
        self.latent_shape = (cfg.in_channels, (frames - 1) // vae_t + 1, height // vae_s, width // vae_s)
        self.text_dim = self.pipe.text_encoder.config.d_model
        self.max_text_len = max_text_len
        self.attention_backend = attention_backend
        if attention_backend:
            from .wan_attention import probe_backend

            probe_backend(attention_backend, torch.device(device), self.model_dtype)
            for model in self._experts():
                model.set_attention_backend(attention_backend)
        self.offload = offload
        self.residency = Residency(self.pipe, offload, device)  # wan_offload: what sits on the GPU
        self.scheduler = self._make_scheduler()
        self.reset_solver()
        self._sigmas = self.scheduler.sigmas.float().cpu().numpy()
        self._timesteps = self.scheduler.timesteps.float().cpu().numpy()

    def _experts(self) -> list[torch.nn.Module]:
        return [self.pipe.transformer] + ([self.pipe.transformer_2] if self.two_experts else [])

    def _expert(self, index: int) -> torch.nn.Module:
        return self.residency.bring(("transformer", "transformer_2")[index])

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_id: str, *, revision: str | None = None, **config: Any) -> WanTeacher:
        """A local diffusers folder or a hub id (at ``revision``); weight files are hashed where
        they were loaded from, so the actor can check them against the job's fingerprint."""
        from diffusers import WanPipeline

        from .wan_files import file_configs, resolve_checkpoint, sha256_file

        dtype, vae_dtype = config.get("dtype", "float32"), config.get("vae_dtype", "float32")
        try:
            ckpt = resolve_checkpoint(path_or_id, revision)
            if ckpt.revision is None:  # a local folder, hashed by resolve_checkpoint
                return cls.from_checkpoint(ckpt, **config)
            pipe = WanPipeline.from_pretrained(path_or_id, revision=ckpt.revision,
                                               dtype={"default": DTYPES[dtype], "vae": DTYPES[vae_dtype]})
        except (OSError, ValueError) as exc:
            raise RuntimeError(load_error_message(path_or_id, exc)) from None
        # hub: hash the snapshot the weights were read from
        from huggingface_hub import snapshot_download

        folder = snapshot_download(path_or_id, revision=ckpt.revision)
        loaded = {rel: sha256_file(Path(folder) / rel) for rel in ckpt.files
                  if (Path(folder) / rel).exists()}
        return cls(pipe, checkpoint=checkpoint_record(ckpt), loaded_files=loaded,
                   configs=file_configs(ckpt), **config)

    @classmethod
    def from_checkpoint(cls, ckpt, **config: Any) -> WanTeacher:
        """From a local folder whose file digests ``ckpt.files`` already holds (hashed by
        resolve_local, or checked against a staged copy's digest file): nothing is hashed
        again and the hub is never asked."""
        from diffusers import WanPipeline

        from .wan_files import file_configs

        dtype, vae_dtype = config.get("dtype", "float32"), config.get("vae_dtype", "float32")
        pipe = WanPipeline.from_pretrained(str(ckpt.folder), local_files_only=True,
                                           dtype={"default": DTYPES[dtype], "vae": DTYPES[vae_dtype]})
        return cls(pipe, checkpoint=checkpoint_record(ckpt), loaded_files=dict(ckpt.files),
                   configs=file_configs(ckpt), **config)

    @classmethod
    def tiny(cls, variant: str = "t2v-a14b", **config: Any) -> WanTeacher:
        """Random weights in the form of ``variant`` (tiny_wan.VARIANTS); ti2v-5b needs
        height/width divisible by 32."""
        from .tiny_wan import build_tiny_pipeline

        config = {"height": 32, "width": 32, "frames": 9, "num_steps": 6, "shift": 3.0,
                  "guidance": (4.0, 3.0), "max_text_len": 16, **config}
        pipe = build_tiny_pipeline(shift=config["shift"], variant=variant)
        return cls(pipe, checkpoint=tiny_checkpoint_record(pipe), **config)

    def _make_scheduler(self):
        return flow_scheduler(self.solver, self.shift, dict(self.pipe.scheduler.config))

    # -- Teacher interface ---------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        from .wan_files import library_versions

        return wan_fingerprint(
            checkpoint=self.checkpoint, configs=self.configs, solver=self.solver,
            shift=self.shift, steps=self.num_steps, guidance=self.guidance,
            boundary_ratio=self.boundary_ratio, expand_timesteps=self.expand_timesteps,
            resolution=(self.height, self.width, self.frames), dtype=self.dtype_name,
            vae_dtype=self.vae_dtype, max_text_len=self.max_text_len,
            attention_backend=self.attention_backend, libraries=library_versions(),
            sigma_grid=self.sigma_grid)

    def count_tokens(self, prompt: str) -> int:
        return count_wan_tokens(self.pipe.tokenizer, prompt)

    def encode_prompts(self, prompts: list[str]) -> EncodedText:
        self.residency.bring("text_encoder")
        return encode_wan_prompts(self.pipe, prompts, max_text_len=self.max_text_len,
                                  device=self.device, dtype=self.model_dtype)

    def sigmas(self) -> np.ndarray:
        return self._sigmas

    def timesteps(self) -> np.ndarray:
        return self._timesteps

    def expert_at(self, step: int) -> int:
        if not self.two_experts:
            return 0
        boundary = self.boundary_ratio * self.scheduler.config.num_train_timesteps
        return 0 if self.scheduler.timesteps[step] >= boundary else 1

    def guidance_at(self, step: int) -> float:
        return self.guidance[self.expert_at(step)]

    def velocity(self, x, step, text, neg_text):
        model = self._expert(self.expert_at(step))
        t = self.scheduler.timesteps[step]
        inputs = x.to(self.model_dtype)
        if self.expand_timesteps:  # TI2V: one timestep per token, (B, F' * H'/2 * W'/2)
            _, _, f, h, w = x.shape
            timestep = t.expand(x.shape[0], f * (h // 2) * (w // 2))
        else:
            timestep = t.expand(x.shape[0])
        # One sample and one branch per forward: every kernel sees the shapes of a batch of one
        # whatever the micro-batch, so a sample's velocities do not depend on its neighbours
        # (on CPU, GEMMs with M < 4 and elementwise tails round differently; on GPU, cuBLAS and
        # attention pick kernels by shape). At A14B's 32,760 tokens a batch-one forward already
        # runs (32760 x 5120) GEMMs; the micro-batch shares the solver step and the copies.
        v_c, v_u = [], []
        with torch.no_grad():
            for b in range(x.shape[0]):
                row = slice(b, b + 1)
                for out, emb in ((v_c, text.emb), (v_u, neg_text.emb)):
                    out.append(model(hidden_states=inputs[row], timestep=timestep[row],
                                     encoder_hidden_states=emb[row], return_dict=False)[0])
        return torch.cat(v_c), torch.cat(v_u)

    def reset_solver(self) -> None:
        if self.sigma_grid == "official":  # both schedulers apply the flow shift to these
            grid = np.linspace(0.999, 0.0, self.num_steps + 1)[:-1]
            self.scheduler.set_timesteps(sigmas=grid.copy(), device=self.device)
            # official timesteps: the shifted sigmas (float64) x 1000 truncated to integers; the
            # model sees them, the solvers step by index
            shifted = self.shift * grid / (1 + (self.shift - 1) * grid)
            self.scheduler.timesteps = torch.from_numpy((shifted * 1000).astype(np.int64)).to(self.device)
        else:
            self.scheduler.set_timesteps(self.num_steps, device=self.device)
        self.scheduler.set_begin_index(0)

    def solver_step(self, x, v, step):
        return self.scheduler.step(v, self.scheduler.timesteps[step], x, return_dict=False)[0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE decode (B, C, F, H, W) latents to video in [-1, 1] (B, 3, frames, H*8, W*8)."""
        vae = self.residency.bring("vae")
        with torch.no_grad():
            return vae.decode(to_vae_latents(vae, latents), return_dict=False)[0]


def pipeline_configs(pipe) -> dict[str, Any]:
    """The configs of a loaded pipeline, as the checkpoint's JSON files hold them."""
    from .wan_files import clean_config

    out = {"model_index": clean_config(dict(pipe.config))}
    for name in ("scheduler", "transformer", "transformer_2", "text_encoder", "vae"):
        module = getattr(pipe, name, None)
        if module is not None:
            cfg = module.config.to_dict() if hasattr(module.config, "to_dict") else dict(module.config)
            out[name] = clean_config(cfg)
    return out


def checkpoint_record(ckpt) -> dict[str, Any]:
    """The fingerprint's record of a checkpoint; a staged copy adds its digest file's sha256."""
    record = {"source": ckpt.source, "revision": ckpt.revision, "files": dict(ckpt.files)}
    if ckpt.staged is not None:
        record["staged"] = ckpt.staged
    return record


def tiny_checkpoint_record(pipe) -> dict[str, Any]:
    """The tiny test teacher has no files: its weights are a function of code and seed, and
    their state-dict digests stand in for file digests."""
    parts = ("transformer", "transformer_2", "text_encoder", "vae")
    return {"source": "tiny-random", "revision": None,
            "weights": {n: weight_digest(getattr(pipe, n)) for n in parts if getattr(pipe, n, None) is not None}}
