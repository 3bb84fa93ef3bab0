"""The Wan 2.2 text encoder and VAE without the two experts: what sampling a student needs to
turn prompts into the text input its cache stored, and its latents into video.

The experts (about 27B parameters in A14B) are never loaded: ``WanPipeline.from_pretrained``
skips a component passed as None. Prompts go through the teacher's own encoding function, so
a cached prompt gives its cached ``text_emb``; the text encoder's weight digest is checked
against the cache's fingerprint, so weights from elsewhere cannot silently change the input.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from .base import EncodedText
from .wan import (
    DTYPES,
    count_wan_tokens,
    encode_wan_prompts,
    load_error_message,
    to_vae_latents,
    weight_digest,
)

TINY_SOURCE = "tiny-random"  # the fingerprint's source of WanTeacher.tiny()


def _torch_dtype(name: str) -> torch.dtype:
    """A dtype as configs write it ("bfloat16") or as fingerprints record it ("torch.bfloat16")."""
    short = name.removeprefix("torch.")
    if short not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(DTYPES)}")
    return DTYPES[short]


def _is_staged(source: str) -> bool:
    """True for a URL or folder holding a digest file of `s2dit teacher stage`."""
    from cache_schema.store import open_store

    from ..staging import DIGEST_FILE

    if "://" not in source and not os.path.isdir(source):
        return False  # a hub id
    return open_store(source).exists(DIGEST_FILE)


class WanEncoders:
    """Tokenizer + UMT5 text encoder + AutoencoderKLWan of one Wan 2.2 pipeline."""

    def __init__(self, pipe, *, source: str, max_text_len: int, device: str = "cpu",
                 text_dtype: torch.dtype = torch.float32):
        self.pipe, self.source, self.max_text_len = pipe, source, max_text_len
        self.device, self.text_dtype = torch.device(device), text_dtype
        pipe.text_encoder.to(self.device)
        pipe.vae.to(self.device)
        self.text_dim = pipe.text_encoder.config.d_model

    @classmethod
    def load(cls, source: str, *, max_text_len: int, device: str = "cpu",
             text_dtype: str = "float32", vae_dtype: str = "float32") -> WanEncoders:
        """From a local diffusers folder or hub id, or ``tiny-random`` (the test teacher)."""
        from diffusers import WanPipeline

        if source == TINY_SOURCE:
            from .tiny_wan import build_tiny_pipeline

            tiny = build_tiny_pipeline()  # experts are tiny here; dropped all the same
            parts = {**tiny.components, "transformer": None, "transformer_2": None}
            pipe = WanPipeline(**parts, boundary_ratio=tiny.config.boundary_ratio)
            for module, dtype in ((pipe.text_encoder, text_dtype), (pipe.vae, vae_dtype)):
                if module.dtype != _torch_dtype(dtype):  # built in fp32
                    module.to(_torch_dtype(dtype))
        else:
            dtypes = {"text_encoder": _torch_dtype(text_dtype), "vae": _torch_dtype(vae_dtype),
                      "default": torch.float32}
            try:
                pipe = WanPipeline.from_pretrained(source, transformer=None, transformer_2=None,
                                                   dtype=dtypes)
            except (OSError, ValueError) as exc:
                message = load_error_message(source, exc, then="pass --teacher-source DIR")
                raise FileNotFoundError(message) from None
        return cls(pipe, source=source, max_text_len=max_text_len, device=device,
                   text_dtype=_torch_dtype(text_dtype))

    @classmethod
    def for_cache(cls, fingerprint: dict[str, Any], *, source: str | None = None,
                  device: str = "cpu", vae_dtype: str = "float32") -> WanEncoders:
        """The encoders of the teacher that made a cache. ``source`` overrides where the weights
        are loaded from (the fingerprint records where the job found them, often another
        machine); the text encoder must be the one the cache's fingerprint names."""
        ckpt = fingerprint.get("checkpoint", {})
        source = source or ckpt.get("source")
        if source and source != TINY_SOURCE and _is_staged(source):  # a `s2dit teacher stage` copy
            return cls._from_staged(source, ckpt, max_text_len=int(fingerprint["max_text_len"]),
                                    device=device, text_dtype=fingerprint.get("model_dtype", "float32"),
                                    vae_dtype=vae_dtype)
        encoders = cls.load(source, max_text_len=int(fingerprint["max_text_len"]), device=device,
                         text_dtype=fingerprint.get("model_dtype", "float32"), vae_dtype=vae_dtype)
        expected = ckpt.get("weights", {}).get("text_encoder")
        found = weight_digest(encoders.pipe.text_encoder)
        if expected is None and os.path.isdir(str(source)):  # file digests of a real checkpoint
            from .wan_files import resolve_local

            wanted = {k: v for k, v in ckpt.get("files", {}).items()
                      if k.startswith("text_encoder/") and k.endswith(".safetensors")}
            have = resolve_local(str(source)).files
            bad = sorted(k for k, v in wanted.items() if have.get(k) != v)
            found, expected = ("|".join(bad), "") if bad else ("", "")
            if bad:
                raise ValueError(f"the text encoder at {source!r} is not the one that made this "
                                 f"cache ({', '.join(bad)} differ): pass the Wan weights the cache "
                                 "was generated with")
        if expected and found != expected:
            raise ValueError(f"the text encoder at {source!r} is not the one that made this cache "
                             f"(weight digest {found[:12]}, cache {expected[:12]}): pass the Wan "
                             "2.2 weights the cache was generated with")
        return encoders

    @classmethod
    def _from_staged(cls, url: str, ckpt: dict[str, Any], **config: Any) -> WanEncoders:
        """From a staged copy (downloaded and checked once per node, as the teacher actors do),
        at the cache's revision; its text encoder files must be the ones the cache records."""
        from ..staging import materialize

        copy = materialize(url, revision=ckpt.get("revision"))
        have = copy.record.sha256s()
        bad = sorted(k for k, v in ckpt.get("files", {}).items()
                     if k.startswith("text_encoder/") and have.get(k) != v)
        if bad:
            raise ValueError(f"the staged copy at {url!r} is not the one that made this cache "
                             f"({', '.join(bad)} differ): pass the staged weights the cache was "
                             "generated with")
        return cls.load(str(copy.folder), **config)

    def count_tokens(self, prompt: str) -> int:
        return count_wan_tokens(self.pipe.tokenizer, prompt)

    def encode_prompts(self, prompts: list[str]) -> EncodedText:
        return encode_wan_prompts(self.pipe, prompts, max_text_len=self.max_text_len,
                                  device=self.device, dtype=self.text_dtype)

    @property
    def vae_scale(self) -> tuple[int, int]:
        """(temporal, spatial) compression of the VAE."""
        cfg = self.pipe.vae.config
        return int(cfg.scale_factor_temporal), int(cfg.scale_factor_spatial)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Whole-clip decode: (B, C, F, H, W) -> (B, 3, (F-1)*4+1, H*8, W*8) in [-1, 1]."""
        vae = self.pipe.vae
        with torch.no_grad():
            return vae.decode(to_vae_latents(vae, latents), return_dict=False)[0]

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)


class StreamDecoder:
    """Decodes latent frames as they arrive (``push``), then ``finish``.

    AutoencoderKLWan's decoder is causal in time: ``_decode`` runs it one latent frame at a
    time, carrying each causal conv's last frames in a feature cache. Carrying that cache
    across calls (the same loop, diffusers 0.42) decodes a clip chunk by chunk into the
    same frames as one whole-clip decode. Tiling and patchified VAEs (the TI2V-5B one)
    take other paths in diffusers: for those the chunks are buffered and decoded whole.
    """

    def __init__(self, encoders: WanEncoders):
        from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

        self.encoders, vae = encoders, encoders.pipe.vae
        self.streams = vae.config.patch_size is None and not getattr(vae, "use_tiling", False)
        self.cache: list = [None] * sum(isinstance(m, WanCausalConv3d) for m in vae.decoder.modules())
        self.first = True
        self.pending: list[torch.Tensor] = []

    @torch.no_grad()
    def push(self, latents: torch.Tensor) -> torch.Tensor | None:
        """(B, C, f, H, W) latent frames -> their video frames (B, 3, n, H*8, W*8) in [-1, 1]:
        1 for the clip's first latent frame, 4 for each later one (None when buffering)."""
        if not self.streams:
            self.pending.append(latents)
            return None
        vae = self.encoders.pipe.vae
        x = vae.post_quant_conv(to_vae_latents(vae, latents))  # 1x1x1 conv: per frame
        out = []
        for i in range(x.shape[2]):
            out.append(vae.decoder(x[:, :, i : i + 1], feat_cache=self.cache, feat_idx=[0],
                                   first_chunk=self.first))
            self.first = False
        return torch.clamp(torch.cat(out, 2), -1.0, 1.0)

    def finish(self) -> torch.Tensor | None:
        """Frames still held back (the whole clip when not streaming)."""
        self.cache = [None] * len(self.cache)
        if not self.pending:
            return None
        whole, self.pending = torch.cat(self.pending, 2), []
        return self.encoders.decode(whole)
