"""Cache write/read throughput against a raw copy of the same bytes, per encoding and store.

For each store (local folder, and with --s3 a moto S3 server on 127.0.0.1 reached through
s3fs) and each encoding, in one run:
  write ratio = raw put of the encoded bytes (one object per shard) / CacheWriter wall time
  read ratio  = raw get of those objects / CacheReader wall time (all fields, all steps)
  bytes per trajectory state / raw half-precision bytes of (state, v_cond, v_uncond)
Ratios near 1.0 mean the cache machinery costs nothing beyond moving the bytes.

    .venv/bin/python bench/bench_cache.py --samples 512 --s3
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import fsspec
import numpy as np
from loopback_s3 import start_loopback_s3

from cache_schema import (
    CacheLayout,
    CacheReader,
    CacheWriter,
    encoding_names,
    get_encoding,
    load_manifest,
    open_store,
)
from cache_schema.encodings import object_path


def records(layout: CacheLayout, n: int):
    rng = np.random.default_rng(0)
    s, shape = layout.num_kept, layout.latent_shape
    half = lambda *sh: rng.standard_normal(sh).astype(np.float16)
    for i in range(n):
        yield {"sample_id": f"{i:032x}", "prompt": f"prompt {i}", "negative_prompt": "", "seed": i,
               "noise": half(*shape), "states": half(s, *shape), "v_cond": half(s, *shape),
               "v_uncond": half(s, *shape), "sigmas": np.linspace(1, 0.05, s, dtype=np.float32),
               "timesteps": np.linspace(1000, 50, s, dtype=np.float32),
               "guidance": np.full(s, 3.0, np.float32), "expert": np.zeros(s, np.uint8),
               "x0": half(*shape), "text_emb": half(12, layout.text_dim)}


def measure(url: str, encoding: str, layout: CacheLayout, n: int, per_shard: int) -> dict:
    recs = list(records(layout, n))
    t0 = time.perf_counter()
    with CacheWriter(url, layout=layout, fingerprint={"bench": 1}, encoding=encoding,
                     samples_per_shard=per_shard) as writer:
        for r in recs:
            writer.write(r)
    write_s = time.perf_counter() - t0
    manifest = load_manifest(url)
    fs, root = fsspec.core.url_to_fs(url)
    store = open_store(url)
    blobs = []  # the same bytes as opaque objects, one per shard
    for shard in manifest.shards:
        keys = get_encoding(shard.encoding).objects(store, shard.path)
        blobs.append(b"".join(fs.cat_file(f"{root}/{object_path(shard.path, key)}")
                              for key in sorted(keys)))
    raw_root = f"{root}-raw"
    fs.makedirs(raw_root, exist_ok=True)
    t0 = time.perf_counter()
    for i, blob in enumerate(blobs):
        fs.pipe_file(f"{raw_root}/{i}.bin", blob)
    raw_write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(len(blobs)):
        fs.cat_file(f"{raw_root}/{i}.bin")
    raw_read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    count = sum(1 for _ in CacheReader(url).iter_records())
    read_s = time.perf_counter() - t0
    assert count == n
    states = n * layout.num_kept
    raw_state = 3 * int(np.prod(layout.latent_shape)) * 2  # state + v_cond + v_uncond in fp16
    return {"encoding": encoding, "MB": manifest.total_bytes / 2**20,
            "write_ratio": raw_write_s / write_s, "read_ratio": raw_read_s / read_s,
            "write_MBps": manifest.total_bytes / 2**20 / write_s,
            "read_MBps": manifest.total_bytes / 2**20 / read_s,
            "bytes_per_state_ratio": manifest.total_bytes / states / raw_state}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--per-shard", type=int, default=128)
    parser.add_argument("--steps", type=int, default=24, help="stored states per trajectory")
    parser.add_argument("--latent", default="16,5,16,16", help="C,F,H,W")
    parser.add_argument("--s3", action="store_true", help="also through a moto S3 server on loopback")
    args = parser.parse_args()
    layout = CacheLayout(latent_shape=tuple(int(v) for v in args.latent.split(",")),
                         num_steps=args.steps, keep_steps=tuple(range(args.steps)), text_dim=32,
                         max_text_len=16)
    stores = [("local", lambda e: os.path.join(tempfile.mkdtemp(prefix="bc"), e))]
    server = None
    if args.s3:
        server = start_loopback_s3("bench-cache")
        stores.append(("s3", lambda e: f"s3://bench-cache/{e}"))
    print(f"{args.samples} trajectories x {args.steps} states of {layout.latent_shape} fp16")
    print(f"{'store':6s} {'enc':5s} {'MB':>7s} {'write/raw':>9s} {'read/raw':>9s} {'write MB/s':>10s} "
          f"{'read MB/s':>9s} {'bytes/state vs raw':>19s}")
    for store, make_url in stores:
        for encoding in encoding_names():
            url = make_url(encoding)
            r = measure(url, encoding, layout, args.samples, args.per_shard)
            print(f"{store:6s} {encoding:5s} {r['MB']:7.1f} {r['write_ratio']:9.2f} {r['read_ratio']:9.2f} "
                  f"{r['write_MBps']:10.0f} {r['read_MBps']:9.0f} {r['bytes_per_state_ratio']:19.3f}")
            if store == "local":
                shutil.rmtree(os.path.dirname(url), ignore_errors=True)
    if server:
        server.stop()


if __name__ == "__main__":
    main()
