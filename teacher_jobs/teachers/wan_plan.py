"""Memory and cost plan of one Wan teacher actor, from the real architectures built on torch's
meta device (no memory, no weights) out of config JSONs: the checkpoint's own, or the public
A14B values shipped in ``wan_configs/`` when the checkpoint is a hub id not yet resolved.

Weights: parameters x bytes of their dtype, per component. Activations (inference, no grad)
for one expert forward of one sample, with stated assumptions. Peak per actor depends on the
offload policy (wan_offload.Residency moves the models): ``none`` keeps everything on the GPU,
``expert`` one expert at a time (the other in host memory), ``model`` one model at a time (the
official ``--offload_model True``). Offload costs host <-> GPU traffic per micro-batch, which
the plan states (``swap_gb_per_sample``) and the cost estimate charges.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SHIPPED = Path(__file__).with_name("wan_configs")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
CUDA_RESERVE_GB = 3.0  # CUDA context, cuBLAS workspace, allocator fragmentation (assumption)
HOST_RESERVE_GB = 8.0  # Python, torch, CUDA host allocations, Ray worker per actor (assumption)
# Host <-> GPU copy rate of a module's .to() from pageable host memory, per direction: PCIe Gen4
# x16 (A100 SXM hosts) carries ~25 GB/s pinned, about half that pageable (assumption, not measured)
HOST_LINK_GBPS = 12.0
TEXT_TOKENS = 512  # UMT5 sequence the pipeline pads to


@dataclass(kw_only=True, slots=True)
class Component:
    params: int
    dtype: str
    bytes: int
    on_gpu_at_peak: bool


@dataclass(kw_only=True, slots=True)
class MemoryPlan:
    components: dict[str, Component]
    tokens_per_sample: int  # DiT sequence length: F' * H'/p * W'/p
    micro_batch: int
    offload: str
    activations_gb: float  # one expert forward of one sample + the micro-batch's latents
    peak_gb_per_actor: float
    host_gb_per_actor: float  # host RAM: every weight while loading, then the offloaded ones
    gpu_memory_gb: float
    fits: bool
    flops_per_forward: float  # one expert forward of one sample
    flops_per_trajectory: float  # steps x 2 (cond + uncond) forwards
    attention_flops_per_trajectory: float  # its self-attention part (quadratic in tokens)
    swap_gb_per_sample: float = 0.0  # host <-> GPU traffic of the offload, both directions
    assumptions: list[str] = field(default_factory=list)
    advice: str = ""  # which knob to turn when it does not fit

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["components"] = {k: asdict(v) for k, v in self.components.items()}
        return out

    def cost(self, gpu: str):
        """Seconds per sample on one GPU of this type (wan_cost: calibrated on official timings)."""
        from .wan_cost import estimate

        attention = self.attention_flops_per_trajectory
        return estimate(self.flops_per_trajectory - attention, attention, gpu,
                        swap_gb=self.swap_gb_per_sample)


def shipped_configs(variant: str = "t2v-a14b") -> dict[str, dict[str, Any]]:
    folder = SHIPPED / variant
    return {name: json.loads((folder / f"{name}.json").read_text())
            for name in ("model_index", "transformer", "text_encoder", "vae")}


def count_params(configs: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Parameters per component of the real classes, built on the meta device."""
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    def n(module) -> int:
        return sum(p.numel() for p in module.parameters())

    with torch.device("meta"):
        expert = n(WanTransformer3DModel.from_config(configs["transformer"]))
        text = n(UMT5EncoderModel(UMT5Config(**{k: v for k, v in configs["text_encoder"].items()
                                                  if not k.startswith("_")})))
        vae = n(AutoencoderKLWan.from_config(configs["vae"]))
    out = {"transformer": expert}
    from .wan_files import has_two_experts

    if has_two_experts(configs["model_index"]):
        out["transformer_2"] = expert  # both experts share one architecture
    return {**out, "text_encoder": text, "vae": vae}


def forward_flops(transformer: dict[str, Any], latent_shape: tuple[int, int, int, int]
                  ) -> tuple[float, float]:
    """FLOPs of one expert forward of one sample from the transformer's config JSON alone (no
    torch): (the part linear in the video tokens, the self-attention part quadratic in them).
    Matmuls count 2 FLOPs a multiply-add; cross-attention keys and values are projections of the
    512 text tokens, not of the video tokens (issue 27: counting them per video token was +8%)."""
    _, f, h, w = latent_shape
    pt, ph, pw = transformer["patch_size"]
    tokens = (f // pt) * (h // ph) * (w // pw)
    dim = transformer["num_attention_heads"] * transformer["attention_head_dim"]
    layers = transformer["num_layers"]
    per_token = 6 * dim * dim + 2 * dim * transformer["ffn_dim"]  # self q/k/v/o, cross q/o, FFN
    linear = layers * (2 * tokens * per_token + 2 * TEXT_TOKENS * 2 * dim * dim  # + text k/v
                       + 4 * tokens * TEXT_TOKENS * dim)  # cross-attention scores and values
    attention = layers * 4 * tokens * tokens * dim  # q k^T and p v over the video tokens
    return float(linear), float(attention)


def plan_actor(configs: dict[str, dict[str, Any]], *, latent_shape: tuple[int, int, int, int],
               steps: int, dtype: str, vae_dtype: str, offload: str, micro_batch: int,
               gpu_memory_gb: float) -> MemoryPlan:
    t = configs["transformer"]
    params = count_params(configs)
    dtypes = {name: (vae_dtype if name == "vae" else dtype) for name in params}
    sizes = {name: p * DTYPE_BYTES[dtypes[name]] for name, p in params.items()}
    on_gpu = resident_at_peak(sizes, offload)
    components = {name: Component(params=p, dtype=dtypes[name], bytes=sizes[name],
                                  on_gpu_at_peak=on_gpu[name]) for name, p in params.items()}
    # tokens of one sample: latent frames x rows/patch x cols/patch
    _, f, h, w = latent_shape
    pt, ph, pw = t["patch_size"]
    tokens = (f // pt) * (h // ph) * (w // pw)
    dim = t["num_attention_heads"] * t["attention_head_dim"]
    e = DTYPE_BYTES[dtype]
    batch = max(1, micro_batch)
    # The transformer sees one sample per forward (batch invariance, wan.py): live at the peak
    # of a block are the fp32 residual + its normed copy (8 D), q/k/v/out (4 D e) and the FFN
    # hidden (F e) of one sample; attention itself is memory-efficient (SDPA/flash: O(N)).
    # The micro-batch adds its fp32 latents: state, v_cond, v_uncond, guided v, solver history (8).
    latent_bytes = 4 * latent_shape[0] * f * h * w
    activations = tokens * (8 * dim + 4 * dim * e + t["ffn_dim"] * e) + 8 * batch * latent_bytes
    peak = sum(c.bytes for c in components.values() if c.on_gpu_at_peak) + activations
    peak_gb = peak / 1e9 + CUDA_RESERVE_GB
    linear_flops, attention_flops = forward_flops(t, latent_shape)
    per_forward = linear_flops + attention_flops
    # from_pretrained materialises every component in host memory before Residency moves them
    # (diffusers loads to CPU first), then the offloaded models stay there.
    host_gb = sum(c.bytes for c in components.values()) / 1e9 + HOST_RESERVE_GB
    fits = peak_gb <= gpu_memory_gb
    plan = MemoryPlan(
        components=components, tokens_per_sample=tokens, micro_batch=batch, offload=offload,
        activations_gb=activations / 1e9, peak_gb_per_actor=peak_gb, host_gb_per_actor=host_gb,
        gpu_memory_gb=gpu_memory_gb,
        fits=fits, flops_per_forward=float(per_forward), flops_per_trajectory=float(2 * steps * per_forward),
        attention_flops_per_trajectory=float(2 * steps * attention_flops),
        swap_gb_per_sample=swap_bytes_per_micro_batch(components, offload) / batch / 1e9,
        assumptions=[
            f"weights: parameters x {dtype} ({vae_dtype} VAE); experts built on the meta device",
            ("activations: one expert forward of one sample (the teacher runs samples one per "
             "forward), no grad, memory-efficient attention, + 8 fp32 latents per micro-batch sample"),
            f"+{CUDA_RESERVE_GB} GB for CUDA context and allocator reserve",
            (f"host memory: every weight while the pipeline loads (on CPU first), "
             f"+{HOST_RESERVE_GB} GB per actor for the process"),
            (f"offload traffic: the models moved in and out per micro-batch, at {HOST_LINK_GBPS:g} "
             "GB/s a direction (pageable host memory over PCIe Gen4)"),
            ("FLOPs: 2 x tokens x (self-attn q/k/v/o, cross-attn q/o, FFN) params + 2 x 512 text "
             "tokens x cross-attn k/v params + 4 x tokens^2 x dim (self-attn) + 4 x tokens x 512 x "
             "dim (cross-attn) per layer; 2 forwards (cond, uncond) per step; text encoder and VAE "
             "excluded")])
    if not fits:
        plan.advice = _advice(plan, components, gpu_memory_gb, dtype)
    return plan


def resident_at_peak(sizes: dict[str, int], offload: str) -> dict[str, bool]:
    """Which models are on the GPU at the peak, by bytes (wan_offload.Residency): ``expert``
    all but the low-noise expert; ``model`` the largest single model (an expert of the A14B;
    UMT5-XXL beside a small single transformer)."""
    if offload == "expert":
        return {name: name != "transformer_2" for name in sizes}
    if offload == "model":
        largest = max(sizes, key=lambda name: sizes[name])
        return {name: name == largest for name in sizes}
    return {name: True for name in sizes}


def swap_bytes_per_micro_batch(components: dict[str, Component], offload: str) -> int:
    """Host <-> GPU bytes one micro-batch moves, both directions (wan_offload.Residency): with
    ``expert`` each of two experts comes in and goes out once (the high-noise one for the first
    steps, the low-noise one at the boundary); with ``model`` the text encoder and every expert
    (the official ``--offload_model True`` per video, which the cost model's calibration holds)."""
    size = {name: c.bytes for name, c in components.items()}
    experts = [name for name in size if name.startswith("transformer")]
    if offload == "expert" and len(experts) == 2:
        return 2 * sum(size[name] for name in experts)
    if offload == "model":
        return 2 * (size["text_encoder"] + sum(size[name] for name in experts))
    return 0


def _advice(plan: MemoryPlan, components: dict[str, Component], budget: float,
            dtype: str) -> str:
    steps = []
    if dtype == "float32":
        steps.append("dtype = \"bfloat16\" (--dtype bfloat16; halves the weights)")
    if plan.offload == "none" and any(k == "transformer_2" for k in components):
        steps.append("offload = \"expert\" (--offload expert: one expert on the GPU at a time)")
    if plan.offload != "model":
        steps.append("offload = \"model\" (--offload model: one model on the GPU at a time)")
    steps.append("a smaller height/width/frames, or gpu_memory_gb of a larger GPU")
    return (f"the plan needs {plan.peak_gb_per_actor:.1f} GB per actor but gpu_memory_gb is "
            f"{budget:g}: set " + ", or ".join(steps))
