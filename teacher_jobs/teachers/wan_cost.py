"""Seconds per sample of the Wan 2.2-A14B teacher on a GPU type, calibrated against the official
Wan 2.2 timings (issue 27; BENCHMARKS.md "Cost model for the A14B job").

Source: github.com/Wan-Video/Wan2.2, README.md "Computational Efficiency on Different GPUs", the
table image assets/comp_effic.png (commit 42bf4cfaa384bc21833865abc2f9e6c0e67233dc, 2026-03-17):
"Total time (s) / peak GPU memory (GB)" per video, single-GPU column, run as
`generate.py --offload_model True --convert_model_dtype` (FlashAttention-3 on Hopper), averaged
over several samples after warm-up, without prompt extension. The official recipe
(wan/configs/wan_t2v_A14B.py, shared_config.py): 40 steps, 81 frames; 480P is 832*480 and 720P
1280*720. The total includes the UMT5 encode, the expert offload swaps and the VAE decode.

Model: one sample costs  L / R_lin + A / R_att + S / B  seconds, with A the self-attention FLOPs
(quadratic in the video tokens), L everything else (linear in them; wan_plan.forward_flops,
2 forwards a step) and S the host <-> GPU bytes the offload moves at B = wan_plan.HOST_LINK_GBPS
(an assumption). The official runs offload every model once a video (UMT5 in and out, each
expert in and out: 137 GB in bf16, ~11 s), which is taken out of the published times before the
two rates are solved and charged back at the job's own traffic (``offload`` and ``micro_batch``:
none 0, expert 2 experts per micro-batch, model as official). Per calibrated GPU the two rates
are solved from the T2V-A14B 480P and 720P figures, so the shipped sizes reproduce the table; the I2V-A14B rows (same backbone, measured
apart) are a held-out check (tests/teacher_jobs/test_wan_cost.py). The fitted attention rates,
230 TFLOP/s on A100 and 737 on H100 (74% of the bf16 peak on both), agree with FlashAttention-2
(arXiv 2307.08691: 50-73% of the A100's peak) and FlashAttention-3 (arXiv 2407.08608: up to 740
TFLOP/s, 75%, on H100); the linear rate folds in the memory-bound element-wise work, the text
encoder, the swaps and the VAE decode (which the cache job does not run: an upper bound by its
share). H200 and B200 have no published figure: H200 takes H100's rates (same tensor peak, more
bandwidth: conservative) and B200 H100's scaled by the peak ratio (a guess until measured: pass
`--throughput` with a measured figure).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from ..gpus import CostEstimate, gpu_type
from .wan_plan import HOST_LINK_GBPS, forward_flops, shipped_configs

OFFICIAL_STEPS = 40  # wan/configs/wan_t2v_A14B.py sample_steps
OFFICIAL_FRAMES = 81  # wan/configs/shared_config.py frame_num
SIZES = {"480P": (480, 832), "720P": (720, 1280)}  # (height, width): '832*480', '1280*720'
# (GPU type, task, size) -> seconds per video on one GPU, from the table above.
PUBLISHED: dict[tuple[str, str, str], float] = {
    ("a100-80g", "t2v-a14b", "480P"): 785.7, ("a100-80g", "t2v-a14b", "720P"): 2735.7,
    ("a100-80g", "i2v-a14b", "480P"): 810.0, ("a100-80g", "i2v-a14b", "720P"): 2810.9,
    ("h100", "t2v-a14b", "480P"): 326.9, ("h100", "t2v-a14b", "720P"): 1041.5,
    ("h100", "i2v-a14b", "480P"): 327.8, ("h100", "i2v-a14b", "720P"): 1055.9,
}
CALIBRATED_TASK = "t2v-a14b"  # the rows the rates are solved from; i2v rows are held out
# GPU types without a published figure: (calibrated type whose rates they take, scale, why)
ASSUMED = {"h200": ("h100", 1.0, "H100's rates: same bf16 tensor peak, more memory bandwidth"),
           "b200": ("h100", 2250 / 989, "H100's rates x the bf16 peak ratio 2250/989, not measured")}


@dataclass(frozen=True, kw_only=True, slots=True)
class Rates:
    linear_tflops: float  # sustained on the token-linear FLOPs, overheads folded in
    attention_tflops: float  # sustained on the self-attention FLOPs
    basis: str  # where the rates come from


def official_flops(size: str) -> tuple[float, float]:
    """(linear, attention) FLOPs of one official sample at a published size."""
    height, width = SIZES[size]
    shape = (16, (OFFICIAL_FRAMES - 1) // 4 + 1, height // 8, width // 8)
    linear, attention = forward_flops(shipped_configs("t2v-a14b")["transformer"], shape)
    forwards = 2 * OFFICIAL_STEPS  # cond + uncond
    return forwards * linear, forwards * attention


@cache
def official_swap_gb() -> float:
    """Host <-> GPU traffic of one official video (``--offload_model True``, bf16): UMT5 and both
    experts each moved in and out once (wan/text2video.py), as wan_plan counts offload "model"."""
    from .wan_plan import count_params

    params = count_params(shipped_configs("t2v-a14b"))
    moved = params["text_encoder"] + params["transformer"] + params["transformer_2"]
    return 2 * moved * 2 / 1e9  # both directions, 2 bytes a bf16 parameter


@cache
def rates(gpu: str) -> Rates:
    """The two sustained rates of a GPU type: solved from its published 480P and 720P times."""
    gpu_type(gpu)  # a clear error for an unknown name
    if gpu in ASSUMED:
        base, scale, why = ASSUMED[gpu]
        r = rates(base)
        return Rates(linear_tflops=r.linear_tflops * scale,
                     attention_tflops=r.attention_tflops * scale, basis=f"assumed: {why}")
    (l1, a1), (l2, a2) = official_flops("480P"), official_flops("720P")
    swaps = official_swap_gb() / HOST_LINK_GBPS  # in the published totals, not in the FLOPs
    t1, t2 = (PUBLISHED[(gpu, CALIBRATED_TASK, size)] - swaps for size in ("480P", "720P"))
    # t = l x u + a x v with u = 1 / R_lin, v = 1 / R_att (Cramer's rule)
    det = l1 * a2 - l2 * a1
    u, v = (t1 * a2 - t2 * a1) / det, (l1 * t2 - l2 * t1) / det
    return Rates(linear_tflops=1 / u / 1e12, attention_tflops=1 / v / 1e12,
                 basis=f"calibrated: official Wan 2.2 T2V-A14B 480P/720P times on one {gpu}")


def estimate(linear_flops: float, attention_flops: float, gpu: str,
             swap_gb: float | None = None) -> CostEstimate:
    """Seconds per sample of a trajectory with these FLOPs on one GPU of this type, moving
    ``swap_gb`` host <-> GPU a sample (None: as the official runs do)."""
    r = rates(gpu)
    moved = official_swap_gb() if swap_gb is None else swap_gb
    seconds = (linear_flops / (r.linear_tflops * 1e12) + attention_flops / (r.attention_tflops * 1e12)
               + moved / HOST_LINK_GBPS)
    return CostEstimate(gpu=gpu, seconds_per_sample=seconds, basis=r.basis)

