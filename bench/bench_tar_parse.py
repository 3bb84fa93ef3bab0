"""Raw parse cost of a WebDataset cache shard: the hand-written ustar reader against stock parsers.

One shard is encoded in memory (the cache's own writer), then parsed from an in-memory stream
(no I/O, no checksums) by each parser, best of ``--repeat`` passes:
  ustar            cache_schema's ustar member reader + .npy views (the loader's path until issue 13)
  tarfile          stock ``tarfile`` stream mode + ``np.load(allow_pickle=False)``
  tarfile+npyview  stock ``tarfile`` stream mode + the cache's .npy header cache and views
  webdataset       ``webdataset.tariterators`` (tarfile inside) grouped by key + ``np.load``
Shapes: the analytic demo's (4,5,8,8) x 24 states and the GPU recipe's Wan 2.2 cache
(configs/wan22_a14b.toml: 16x21x36x64 latents, 8 kept states, UMT5 4096-d text).

    .venv/bin/python bench/bench_tar_parse.py
"""

from __future__ import annotations

import argparse
import io
import tarfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from cache_schema import CacheLayout
from cache_schema.encodings import ustar, wds

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


def _stock_members(stream) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for info in tar:
            if info.isfile():
                yield info.name, tar.extractfile(info).read()


def _np_load(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _group(members, decode_npy) -> Iterator[dict[str, Any]]:
    record: dict[str, Any] = {}
    key = None
    for name, data in members:
        k, _, suffix = name.partition(".")
        if k != key and record:
            yield record
            record = {}
        key = k
        record[suffix] = decode_npy(data) if suffix.endswith(".npy") else data
    if record:
        yield record


def parse_ustar(blob: bytes, layout: CacheLayout) -> int:
    return sum(1 for _ in wds.iter_shard(io.BytesIO(blob), layout, wds_fields()))


def parse_tarfile(blob: bytes, layout: CacheLayout) -> int:
    return sum(1 for _ in _group(_stock_members(io.BytesIO(blob)), _np_load))


def parse_tarfile_npyview(blob: bytes, layout: CacheLayout) -> int:
    return sum(1 for _ in _group(_stock_members(io.BytesIO(blob)), ustar.npy_from_bytes))


def parse_webdataset(blob: bytes, layout: CacheLayout) -> int:
    from webdataset import tariterators

    count = 0
    files = ({**f, "__url__": "memory"} for f in tariterators.tar_file_iterator(io.BytesIO(blob)))
    for sample in tariterators.group_by_keys(files):
        for key, value in sample.items():
            if key.endswith("npy"):
                sample[key] = _np_load(value)
        count += 1
    return count


def wds_fields() -> tuple[str, ...]:
    from cache_schema import FIELD_NAMES

    return FIELD_NAMES


PARSERS: dict[str, Callable[[bytes, CacheLayout], int]] = {
    "ustar": parse_ustar, "tarfile": parse_tarfile, "tarfile+npyview": parse_tarfile_npyview,
    "webdataset": parse_webdataset,
}


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
        for name, parse in PARSERS.items():
            best = float("inf")
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                assert parse(blob, layout) == n
                best = min(best, time.perf_counter() - t0)
            print(f"{shape:6s} {name:16s} {n / best:10.1f} {len(blob) / 2**20 / best:7.0f} "
                  f"{1000 * best / n:9.3f}")


if __name__ == "__main__":
    main()
