"""Which of a Wan pipeline's models sit on the GPU, moved explicitly (issue 27).

- ``none``: every model on the device.
- ``expert``: text encoder and VAE on the device, one expert at a time (the other on the host
  until the boundary). Each micro-batch brings the high-noise expert in and, at the boundary,
  the low-noise one: 2 expert moves in (and 2 out) per micro-batch.
- ``model``: one model at a time, what the official ``generate.py --offload_model True`` does
  (the timings the cost model is calibrated on): the text encoder comes in to encode, then each
  expert in turn, and whatever was on the device goes back to the host first.

diffusers' ``enable_model_cpu_offload`` is not used: its hooks offload a model only when the
next model of ``text_encoder->transformer->transformer_2->vae`` runs, and the job's loop never
runs the VAE, so after the first sample both experts stayed resident (57 GB in bf16) while the
memory plan counted one. Moves are exact copies: a sample's bytes do not depend on the policy.
"""

from __future__ import annotations

import torch

MODELS = ("text_encoder", "transformer", "transformer_2", "vae")
POLICIES = ("none", "expert", "model")


class Residency:
    """The models of ``pipe`` and where each sits; ``bring(name)`` puts one on the device,
    first moving to the host whatever the policy says may not stay beside it."""

    def __init__(self, pipe, policy: str, device: torch.device | str):
        if policy not in POLICIES:
            raise ValueError(f"offload must be one of {POLICIES}, got {policy!r}")
        self.policy, self.device, self.host = policy, torch.device(device), torch.device("cpu")
        self.models = {n: getattr(pipe, n) for n in MODELS if getattr(pipe, n, None) is not None}
        self.two_experts = "transformer_2" in self.models
        self.on_device: set[str] = set()
        self.moved_bytes = 0
        for name in self.models:
            self._move(name, to_device=self._starts_on_device(name))
        self.moved_bytes = 0  # host <-> device traffic since placement, both directions

    def _starts_on_device(self, name: str) -> bool:
        if self.policy == "none":
            return True
        if self.policy == "expert":
            return name != "transformer_2"
        return False  # model: brought in when first used

    def _evictable(self, name: str) -> bool:
        if self.policy == "model":
            return True
        return self.policy == "expert" and self.two_experts and name.startswith("transformer")

    def _move(self, name: str, *, to_device: bool) -> None:
        module = self.models[name]
        module.to(self.device if to_device else self.host)
        (self.on_device.add if to_device else self.on_device.discard)(name)
        self.moved_bytes += sum(p.numel() * p.element_size() for p in module.parameters())

    def bring(self, name: str) -> torch.nn.Module:
        """``name`` on the device (a no-op when it is there), others evicted as the policy says."""
        if name not in self.on_device:
            for other in sorted(self.on_device):
                if self._evictable(other):
                    self._move(other, to_device=False)  # free the GPU before the next comes in
            self._move(name, to_device=True)
        return self.models[name]
