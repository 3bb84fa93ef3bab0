"""The GPU types a teacher job can be sized for (`[job] gpu`, `s2dit cache estimate --gpu`).

Public hardware facts only: the Kubernetes product label that NVIDIA GPU feature discovery puts on
a node (what infra/kuberay selects with ``nvidia.com/gpu.product``), memory, and the dense bf16
tensor peak from NVIDIA's data sheets (SXM parts). How fast a teacher runs on each is the
teacher's own calibrated model (teachers/wan_cost.py), not a fraction of this peak.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class GpuType:
    name: str  # the name configs and flags use
    product: str  # nvidia.com/gpu.product label of the node
    memory_gb: float
    peak_bf16_tflops: float  # dense (no sparsity), data sheet


GPUS: dict[str, GpuType] = {g.name: g for g in (
    GpuType(name="a100-80g", product="NVIDIA-A100-SXM4-80GB", memory_gb=80, peak_bf16_tflops=312),
    GpuType(name="h100", product="NVIDIA-H100-80GB-HBM3", memory_gb=80, peak_bf16_tflops=989),
    GpuType(name="h200", product="NVIDIA-H200", memory_gb=141, peak_bf16_tflops=989),
    GpuType(name="b200", product="NVIDIA-B200", memory_gb=180, peak_bf16_tflops=2250),
)}


@dataclass(frozen=True, kw_only=True, slots=True)
class CostEstimate:
    """What one sample costs on one GPU: a teacher's calibrated model or a measured figure."""

    gpu: str
    seconds_per_sample: float
    basis: str  # calibrated (and on what), assumed (and why) or measured

    def gpu_hours(self, samples: int) -> float:
        return samples * self.seconds_per_sample / 3600

    def to_json(self) -> dict[str, object]:
        return {"gpu": self.gpu, "seconds_per_sample": round(self.seconds_per_sample, 1),
                "gpu_hours_per_10k": round(self.gpu_hours(10_000), 1), "basis": self.basis}


def gpu_type(name: str) -> GpuType:
    try:
        return GPUS[name]
    except KeyError:
        raise ValueError(f"unknown GPU type {name!r}: one of {', '.join(GPUS)}") from None


def gpu_of_product(product: str) -> GpuType:
    """The GPU type a node label selects."""
    for gpu in GPUS.values():
        if gpu.product == product:
            return gpu
    raise ValueError(f"no GPU type has the product label {product!r}")
