"""Wan 2.2-T2V-A14B through diffusers: two experts split at ``boundary_ratio``, per-expert
guidance, flow shift, Euler or UniPC flow solvers; our own loop over the pipeline's modules so
every state and both velocities can be recorded (DESIGN 4.2).

With the same initial noise, prompts, steps, shift and guidance pair, the final latent of this
loop equals stock ``WanPipeline(output_type="latent")`` (bit for bit with Euler).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from .base import CODE_VERSION, EncodedText, Teacher

HUB_ID = "Wan-AI/Wan2.2-T2V-A14B-Diffusers"
SOLVERS = ("euler", "unipc")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
    """The one message for Wan weights that are not there (offline, wrong folder)."""
    return (f"cannot load the Wan 2.2 pipeline from {path_or_id!r} ({type(exc).__name__}: "
            f"{str(exc)[:300]}). Without network access, download it where you have one "
            f"(`huggingface-cli download {HUB_ID} --local-dir DIR`), copy DIR here and {then}")


def count_wan_tokens(tokenizer, prompt: str) -> int:
    return len(tokenizer(prompt, add_special_tokens=True).input_ids)


def encode_wan_prompts(pipe, prompts: list[str], *, max_text_len: int, device: torch.device,
                       dtype: torch.dtype) -> EncodedText:
    """UMT5 embeddings (B, max_text_len, D), zero past each prompt's tokens; shared by the
    teacher and by sampling a student, so both see the same text input."""
    lengths = [min(count_wan_tokens(pipe.tokenizer, p), max_text_len) for p in prompts]
    with torch.no_grad():
        emb = pipe._get_t5_prompt_embeds(prompt=prompts, max_sequence_length=max_text_len,
                                         device=device, dtype=dtype)
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
    name = "wan2.2"

    def __init__(self, pipeline, *, source: str, num_steps: int = 40, shift: float = 12.0,
                 guidance: tuple[float, float] = (4.0, 3.0), height: int = 288, width: int = 512,
                 frames: int = 81, solver: str = "euler", device: str = "cpu",
                 dtype: str = "float32", max_text_len: int = 512):
        del dtype  # applied by from_pretrained(dtype=...)
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        if height % 16 or width % 16 or (frames - 1) % 4:
            raise ValueError(f"Wan needs height/width divisible by 16 and frames = 4k+1 "
                             f"(got {height}x{width}, {frames} frames)")
        self.pipe = pipeline.to(device)
        self.source, self.solver = source, solver
        self.num_steps, self.shift = num_steps, float(shift)
        self.guidance = tuple(float(g) for g in guidance)
        self.height, self.width, self.frames = height, width, frames
        self.device, self.dtype = torch.device(device), torch.float32  # latents stay fp32
        self.model_dtype = self.pipe.transformer.dtype  # set at load (dtype=), as diffusers keeps
        # some submodules in fp32 that a later .to(dtype) would break
        cfg = self.pipe.transformer.config
        vae_t = getattr(self.pipe, "vae_scale_factor_temporal", 4)
        vae_s = getattr(self.pipe, "vae_scale_factor_spatial", 8)
        self.latent_shape = (cfg.in_channels, (frames - 1) // vae_t + 1, height // vae_s, width // vae_s)
        self.text_dim = self.pipe.text_encoder.config.d_model
        self.max_text_len = max_text_len
        self.boundary_ratio = self.pipe.config.boundary_ratio
        self.scheduler = self._make_scheduler()
        self.reset_solver()
        self._sigmas = self.scheduler.sigmas.float().cpu().numpy()
        self._timesteps = self.scheduler.timesteps.float().cpu().numpy()

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_id: str, **config: Any) -> WanTeacher:
        from diffusers import WanPipeline

        dtype = DTYPES[config.get("dtype", "float32")]
        try:
            pipe = WanPipeline.from_pretrained(path_or_id, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise RuntimeError(load_error_message(path_or_id, exc)) from None
        return cls(pipe, source=path_or_id, **config)

    @classmethod
    def tiny(cls, **config: Any) -> WanTeacher:
        from .tiny_wan import build_tiny_pipeline

        config = {"height": 32, "width": 32, "frames": 9, "num_steps": 6, "shift": 3.0,
                  "guidance": (4.0, 3.0), "max_text_len": 16, **config}
        return cls(build_tiny_pipeline(shift=config["shift"]), source="tiny-random", **config)

    def _make_scheduler(self):
        from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

        base = dict(self.pipe.scheduler.config)
        if self.solver == "euler":
            return FlowMatchEulerDiscreteScheduler.from_config(base, shift=self.shift)
        return UniPCMultistepScheduler.from_config(base, flow_shift=self.shift, use_flow_sigmas=True,
                                                   prediction_type="flow_prediction")

    # -- Teacher interface ---------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        return {"teacher": "wan2.2-t2v-a14b", "source": self.source,
                "weights": {"transformer": weight_digest(self.pipe.transformer),
                            "transformer_2": weight_digest(self.pipe.transformer_2),
                            "text_encoder": weight_digest(self.pipe.text_encoder)},
                "boundary_ratio": self.boundary_ratio, "solver": self.solver,
                "scheduler": type(self.scheduler).__name__, "shift": self.shift,
                "steps": self.num_steps, "guidance": list(self.guidance),
                "resolution": [self.height, self.width, self.frames],
                "model_dtype": str(self.model_dtype), "max_text_len": self.max_text_len,
                "code_version": CODE_VERSION}

    def count_tokens(self, prompt: str) -> int:
        return count_wan_tokens(self.pipe.tokenizer, prompt)

    def encode_prompts(self, prompts: list[str]) -> EncodedText:
        return encode_wan_prompts(self.pipe, prompts, max_text_len=self.max_text_len,
                                  device=self.device, dtype=self.model_dtype)

    def sigmas(self) -> np.ndarray:
        return self._sigmas

    def timesteps(self) -> np.ndarray:
        return self._timesteps

    def expert_at(self, step: int) -> int:
        if self.boundary_ratio is None:
            return 0
        boundary = self.boundary_ratio * self.scheduler.config.num_train_timesteps
        return 0 if self.scheduler.timesteps[step] >= boundary else 1

    def guidance_at(self, step: int) -> float:
        return self.guidance[self.expert_at(step)]

    def velocity(self, x, step, text, neg_text):
        model = self.pipe.transformer if self.expert_at(step) == 0 else self.pipe.transformer_2
        t = self.scheduler.timesteps[step]
        inputs = x.to(self.model_dtype)
        timestep = t.expand(x.shape[0])
        with torch.no_grad():
            v_c = model(hidden_states=inputs, timestep=timestep, encoder_hidden_states=text.emb,
                        return_dict=False)[0]
            v_u = model(hidden_states=inputs, timestep=timestep, encoder_hidden_states=neg_text.emb,
                        return_dict=False)[0]
        return v_c, v_u

    def reset_solver(self) -> None:
        self.scheduler.set_timesteps(self.num_steps, device=self.device)
        self.scheduler.set_begin_index(0)

    def solver_step(self, x, v, step):
        return self.scheduler.step(v, self.scheduler.timesteps[step], x, return_dict=False)[0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE decode (B, C, F, H, W) latents to video in [-1, 1] (B, 3, frames, H*8, W*8)."""
        vae = self.pipe.vae
        with torch.no_grad():
            return vae.decode(to_vae_latents(vae, latents), return_dict=False)[0]
