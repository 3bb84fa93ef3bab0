"""Is the streaming loader ever the bottleneck of S2DiT-KD training? (issue 7)

In one run, per store (local folder, and with --s3 a moto S3 server on 127.0.0.1 through s3fs)
and encoding:
  loader / raw  = the loader's samples/s (the trainer's fields, checksums verified, shuffled)
                  / the samples/s of a raw get of the same shard bytes from the same store
and, on the local wds cache, the share of S2DiT-KD step time spent waiting for data over
``--train-steps`` optimiser steps (the model of configs/kd_demo.toml; 0 skips it).
``--parser`` chooses the WebDataset tar parser (cache_schema's ustar reader, or stock tarfile /
webdataset with numpy's .npy reader); ``--latent/--steps/--text-dim/--text-len`` other shapes.
Issue 18: each line also reads the epoch again with stage 1's step selection (only the steps
the rows use; Zarr fetches those (sample, step) chunks by range) and prints the loader's bytes
per sample against the full read's.

    .venv/bin/python bench/bench_loader.py --samples 2048 --s3
    .venv/bin/python bench/bench_loader.py --encodings wds --parser tarfile
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import tempfile
import time

import fsspec
from bench_cache import records
from loopback_s3 import start_loopback_s3

from cache_schema import (
    CacheLayout,
    CacheWriter,
    encoding_names,
    get_encoding,
    load_manifest,
    open_store,
    register_encoding,
)
from cache_schema.encodings import object_path
from cache_schema.encodings.wds import PARSERS, WebDataset
from student_train.config import TrainConfig
from student_train.data import CacheStream, LoaderConfig, stage1_selector
from student_train.trainer import FIELDS, Trainer, record_uniforms


def write_cache(url: str, encoding: str, layout: CacheLayout, n: int, per_shard: int) -> None:
    with CacheWriter(url, layout=layout, fingerprint={"bench": 1}, encoding=encoding,
                     samples_per_shard=per_shard) as writer:
        for record in records(layout, n):
            writer.write(record)


def loader_vs_raw(url: str, n: int) -> dict:
    manifest = load_manifest(url)
    store = open_store(url)
    fs, root = fsspec.core.url_to_fs(url)
    paths = [f"{root}/{object_path(shard.path, key)}" for shard in manifest.shards
             for key in get_encoding(shard.encoding).objects(store, shard.path)]
    t0 = time.perf_counter()
    raw_bytes = sum(len(fs.cat_file(p)) for p in paths)  # the same objects, as opaque bytes
    raw_s = time.perf_counter() - t0
    stream = CacheStream(url, fields=FIELDS, config=LoaderConfig(seed=0))
    t0 = time.perf_counter()
    count = sum(1 for _ in itertools.islice(iter(stream), n))
    loader_s = time.perf_counter() - t0
    assert count == n
    # issue 18: the same epoch reading only the steps stage 1's rows use (4-step schedule)
    part = CacheStream(url, fields=FIELDS, config=LoaderConfig(seed=0))
    layout = part.reader.layout
    schedule = sorted({round(k * layout.num_steps / 4) for k in range(4)})
    part.select_steps(stage1_selector(seed=0, num_kept=layout.num_kept, schedule=schedule,
                                      kd_fraction=1.0, uniforms=record_uniforms))
    t0 = time.perf_counter()
    assert sum(1 for _ in itertools.islice(iter(part), n)) == n
    part_s = time.perf_counter() - t0
    return {"raw_sps": n / raw_s, "loader_sps": n / loader_s, "ratio": raw_s / loader_s,
            "MBps": raw_bytes / 2**20 / loader_s, "partial_sps": n / part_s,
            "full_bps": stream.bytes_per_sample, "partial_bps": part.bytes_per_sample}


def wait_share(url: str, steps: int) -> dict:
    out = tempfile.mkdtemp(prefix="bl-run")
    config = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "kd_demo.toml")
    cfg = TrainConfig.load(config, steps=steps, checkpoint_every=10**9, checkpoint_every_s=0)
    trainer = Trainer(url, out, cfg)
    trainer.run(progress=False, stop_after=3)  # warm-up: first shards, allocator
    wait0, t0 = trainer.stream.wait_seconds, time.perf_counter()
    trainer.run(progress=False)
    total = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    ran = steps - 3
    return {"step_ms": 1000 * total / ran, "wait_share": (trainer.stream.wait_seconds - wait0) / total,
            "need_sps": cfg.batch_size * ran / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=2048, help="trajectories in each cache")
    parser.add_argument("--per-shard", type=int, default=256)
    parser.add_argument("--latent", default="4,5,8,8", help="C,F,H,W (the analytic demo's)")
    parser.add_argument("--steps", type=int, default=24, help="stored states per trajectory")
    parser.add_argument("--text-dim", type=int, default=32, help="text embedding width")
    parser.add_argument("--text-len", type=int, default=16, help="max text tokens (12 are written)")
    parser.add_argument("--train-steps", type=int, default=60,
                        help="optimiser steps for the wait share (0: skip)")
    parser.add_argument("--s3", action="store_true", help="also through a moto S3 server on loopback")
    parser.add_argument("--encodings", default=",".join(encoding_names()),
                        help="comma list of encodings to measure")
    parser.add_argument("--parser", choices=list(PARSERS), default="ustar",
                        help="WebDataset tar parser the reader uses")
    args = parser.parse_args()
    register_encoding(WebDataset(parser=args.parser), replace=True)
    layout = CacheLayout(latent_shape=tuple(int(v) for v in args.latent.split(",")),
                         num_steps=args.steps, keep_steps=tuple(range(args.steps)),
                         text_dim=args.text_dim, max_text_len=args.text_len)
    local = tempfile.mkdtemp(prefix="bl")
    stores = [("local", lambda e: os.path.join(local, e))]
    server = start_loopback_s3("bench-loader") if args.s3 else None
    if server:
        stores.append(("s3", lambda e: f"s3://bench-loader/{e}"))
    print(f"{args.samples} trajectories x {args.steps} states of {layout.latent_shape} fp16, "
          f"{args.per_shard} per shard; loader reads {', '.join(FIELDS)} with checksums; "
          f"wds parser {args.parser}")
    print(f"{'store':6s} {'enc':5s} {'raw samples/s':>13s} {'loader samples/s':>16s} {'loader/raw':>10s} "
          f"{'MB/s':>6s} | partial reads (stage-1 rows): samples/s, bytes/sample vs full")
    for store, make_url in stores:
        for encoding in args.encodings.split(","):
            url = make_url(encoding)
            write_cache(url, encoding, layout, args.samples, args.per_shard)
            r = loader_vs_raw(url, args.samples)
            print(f"{store:6s} {encoding:5s} {r['raw_sps']:13.0f} {r['loader_sps']:16.0f} "
                  f"{r['ratio']:10.2f} {r['MBps']:6.0f} | {r['partial_sps']:6.0f} samples/s, "
                  f"{r['partial_bps']:8.0f} / {r['full_bps']:8.0f} B = "
                  f"{r['partial_bps'] / r['full_bps']:.3f}")
    first = args.encodings.split(",")[0]
    if args.train_steps > 0:
        w = wait_share(os.path.join(local, first), args.train_steps)
        print(f"S2DiT-KD on the local {first} cache: {w['step_ms']:.0f} ms/step, consumes "
              f"{w['need_sps']:.0f} samples/s; loader wait {100 * w['wait_share']:.1f}% of step time")
    shutil.rmtree(local, ignore_errors=True)
    if server:
        server.stop()


if __name__ == "__main__":
    main()
