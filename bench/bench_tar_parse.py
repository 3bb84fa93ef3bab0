"""Raw parse cost of a WebDataset cache shard: the hand-written ustar reader against stock parsers.

One shard is encoded in memory (the cache's own writer), then parsed from an in-memory stream
(no I/O, no checksums) into records by the WebDataset reader with each parser, best of
``--repeat`` passes:
  ustar            cache_schema's ustar member reader + .npy views (the loader's path)
  tarfile          stock ``tarfile`` stream mode + ``np.load(allow_pickle=False)``
  tarfile+npyview  stock ``tarfile`` stream mode + the cache's .npy header cache and views
  webdataset       ``webdataset.tariterators`` (tarfile inside) + ``np.load``
Shapes: the analytic demo's (4,5,8,8) x 24 states and the GPU recipe's Wan 2.2 cache
(configs/wan22_a14b.toml: 16x21x36x64 latents, 8 kept states, UMT5 4096-d text).

    .venv/bin/python bench/bench_tar_parse.py
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from cache_schema import FIELD_NAMES, CacheLayout
from cache_schema.encodings import wds
from cache_schema.encodings.tar_stock import tarfile_members
from cache_schema.encodings.ustar import npy_from_bytes

SHAPES = {  # name: (latent C,F,H,W, kept states, text dim, text tokens, samples per shard)
    "demo": ((4, 5, 8, 8), 24, 32, 12, 256),
    "wan22": ((16, 21, 36, 64), 8, 4096, 128, 4),
}


def records(latent, states, text_dim, tokens, n) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    half = lambda *sh: rng.standard_normal(sh, dtype=np.float32).astype(np.float16)
    return [{"sample_id": f"{i:032x}", "prompt": f"prompt {i}", "negative_prompt": "", "seed": i,
             "noise": half(*latent), "states": half(states, *latent), "v_cond": half(states, *latent),
             "v_uncond": half(states, *latent), "sigmas": np.linspace(1, 0.05, states, dtype=np.float32),
             "timesteps": np.linspace(1000, 50, states, dtype=np.float32),
             "guidance": np.full(states, 3.0, np.float32), "expert": np.zeros(states, np.uint8),
             "x0": half(*latent), "text_emb": half(tokens, text_dim)} for i in range(n)]


def _parse(parser: str) -> Callable[[bytes, CacheLayout], int]:
    def parse(blob: bytes, layout: CacheLayout) -> int:
        return sum(1 for _ in wds.iter_shard(io.BytesIO(blob), layout, FIELD_NAMES, parser=parser))
    return parse


# Stock tarfile members with the cache's .npy views: what the .npy reader alone is worth.
wds.PARSERS.setdefault("tarfile+npyview", (tarfile_members, npy_from_bytes))
PARSERS = ("ustar", "tarfile", "tarfile+npyview", "webdataset")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma list of " + ", ".join(SHAPES))
    parser.add_argument("--repeat", type=int, default=5, help="passes per parser (best is reported)")
    args = parser.parse_args()
    print(f"{'shape':6s} {'parser':16s} {'samples/s':>10s} {'MB/s':>7s} {'ms/sample':>9s}")
    for shape in args.shapes.split(","):
        latent, states, text_dim, tokens, n = SHAPES[shape]
        layout = CacheLayout(latent_shape=latent, num_steps=states, keep_steps=tuple(range(states)),
                             text_dim=text_dim, max_text_len=tokens)
        blob = wds.encode_shard(records(latent, states, text_dim, tokens, n))
        for name in PARSERS:
            parse = _parse(name)
            best = float("inf")
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                assert parse(blob, layout) == n
                best = min(best, time.perf_counter() - t0)
            print(f"{shape:6s} {name:16s} {n / best:10.1f} {len(blob) / 2**20 / best:7.0f} "
                  f"{1000 * best / n:9.3f}")


if __name__ == "__main__":
    main()
