"""What each value codec stores and costs, on real trajectories (issue 18).

One line per (teacher, solver, steps, codec) run, on one store (a local folder, or with --s3 a
moto S3 server on 127.0.0.1 through s3fs), Zarr encoding:

  state x raw   = stored bytes of states + v_cond + v_uncond per stored step, over their raw
                  half-precision bytes (3 latents of 2 bytes per value)
  shard x raw   = all shard bytes over the raw half-precision bytes of every tensor field
  write / put   = cache write MB/s (validate, checksum, code, put; raw-half MB) over a raw put
                  of the same number of bytes to the same store
  read / get    = full verified read MB/s (get, decode, checksums) over a raw get of them
  exact         = every decoded half-precision value equals the recorded one, bit for bit

Trajectories come from the real recorder: the analytic teacher (Euler) and the tiny random
two-expert Wan 2.2 (Euler, UniPC) at 24 and 40 steps (--steps). At Wan latent sizes, where no
teacher runs here, ``--synthetic 16x21x60x104`` builds trajectories of the shipped Wan 2.2
recipe's shape (``synthetic.py``: 40 steps, shift 12, guidance 4 / 3, 8 kept steps, 512 x 4096
text) from a synthetic velocity field, solved in float32 and stored in half precision as the
recorder does.

    .venv/bin/python bench/bench_codec.py
    .venv/bin/python bench/bench_codec.py --s3 --steps 24
    .venv/bin/python bench/bench_codec.py --synthetic 16x21x60x104,16x21x30x52 --samples 4 --per-shard 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid

import synthetic
from loopback_s3 import start_loopback_s3

from cache_schema import CacheReader, CacheWriter, open_store
from cache_schema.codecs import codec_names
from cache_schema.fields import FIELDS, FieldKind
from teacher_jobs.analytic_corpus import class_prompts
from teacher_jobs.sampler import cache_fingerprint, record_trajectories
from teacher_jobs.teachers import build_teacher

STEP_FIELDS = ("states", "v_cond", "v_uncond")
WAN = {"height": 32, "width": 32, "frames": 9, "max_text_len": 16, "shift": 3.0,
       "guidance": (4.0, 3.0)}


def synthetic_trajectories(shape: str, samples: int, solver: str):
    latent = tuple(int(n) for n in shape.split("x"))
    keep = synthetic.keep_uniform(synthetic.STEPS, 8)
    records = [synthetic.trajectory(latent, seed, keep, solver=solver) for seed in range(samples)]
    return records, synthetic.layout(latent, keep), {"teacher": "synthetic", "solver": solver}


def trajectories(source: str, steps: int, samples: int):
    if source == "analytic":
        teacher = build_teacher("analytic", num_steps=steps)
        prompts = (class_prompts() * samples)[:samples]
    else:
        teacher = build_teacher("wan-tiny", num_steps=steps, solver=source.split("-")[1], **WAN)
        words = ["a red cat running left", "blue ocean wave at night", "a green car in the rain",
                 "camera pan over a city street", "a dog running right", "slow zoom on a ring"]
        prompts = (words * samples)[:samples]
    keep = tuple(range(steps))
    records, _ = record_trajectories(teacher, prompts, list(range(samples)), global_seed=0,
                                     keep_steps=keep, micro_batch=8)
    fp = cache_fingerprint(teacher, keep_steps=keep, global_seed=0, half_dtype="float16",
                           negative_prompt="")
    return records, teacher.layout(keep), fp


def raw_bytes(records, fields) -> int:
    return sum(r[f].nbytes for r in records for f in fields if f in r)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _write(url: str, records, layout, fp, per_shard: int) -> None:
    with CacheWriter(url, layout=layout, fingerprint=fp, encoding="zarr",
                     samples_per_shard=per_shard) as writer:
        for record in records:
            writer.write(dict(record))


def run(url: str, records, layout, fp, codec: str, per_shard: int, repeat: int = 1) -> dict:
    """One codec on one store; each of write, read, put and get is timed ``repeat`` times,
    interleaved (write, read, put, get, write, ...), and its fastest time kept: on a loaded
    machine the other helpers' work only ever adds time."""
    import dataclasses

    layout = dataclasses.replace(layout, codec=codec)
    tensor_fields = [s.name for s in FIELDS if s.kind is FieldKind.TENSOR]
    logical = raw_bytes(records, tensor_fields)
    store = open_store(url)
    times: dict[str, list[float]] = {"write": [], "read": [], "put": [], "get": []}
    for rep in range(repeat):
        cache = f"{url}/r{rep}"
        times["write"].append(_timed(lambda cache=cache: _write(cache, records, layout, fp,
                                                                per_shard)))
        reader = CacheReader(cache)
        got: list = []
        times["read"].append(_timed(lambda reader=reader, got=got: got.extend(
            reader.iter_records(verify=True))))
        if rep == 0:
            exact = len(got) == len(records) and all(
                a[f].tobytes() == b[f].tobytes() for a, b in zip(records, got)
                for f in tensor_fields if f in a)
            sizes: dict[str, int] = {}
            for shard in reader.shards:
                for rel, size in store.walk_files(f"r0/{shard.path}").items():
                    field = rel.removeprefix(f"r0/{shard.path}/").split("/")[0]
                    sizes[field] = sizes.get(field, 0) + size
            shard_bytes = sum(s.bytes for s in reader.shards)
        del got
        # the raw baseline: the same number of bytes put and got as one object per shard
        blob = os.urandom(1 << 20) * (logical // (1 << 20) + 1)
        per = logical // len(reader.shards)
        names = [f"raw-{uuid.uuid4().hex[:8]}-{i}" for i in range(len(reader.shards))]
        times["put"].append(_timed(lambda names=names, blob=blob, per=per: [
            store.put_bytes(name, blob[:per]) for name in names]))
        del blob
        times["get"].append(_timed(lambda names=names: [store.read_bytes(n) for n in names]))
        # loopback S3 keeps its objects in this process's memory: drop what this rep wrote
        open_store(cache).fs.rm(open_store(cache).path(""), recursive=True)
        for name in names:
            store.fs.rm(store.path(name))
    mb = logical / 1e6
    best = {k: min(v) for k, v in times.items()}
    return {"state_x_raw": sum(sizes.get(f, 0) for f in STEP_FIELDS) / raw_bytes(records, STEP_FIELDS),
            "shard_x_raw": shard_bytes / logical,
            "write_mbs": mb / best["write"], "put_mbs": mb / best["put"],
            "read_mbs": mb / best["read"], "get_mbs": mb / best["get"], "exact": exact}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", default="analytic,wan-euler,wan-unipc",
                        help="analytic | wan-euler | wan-unipc (comma list)")
    parser.add_argument("--steps", default="24,40", help="solver steps (comma list), all kept")
    parser.add_argument("--samples", type=int, default=64, help="trajectories per run")
    parser.add_argument("--per-shard", type=int, default=16, help="samples per shard")
    parser.add_argument("--codecs", default=",".join(codec_names()))
    parser.add_argument("--repeat", type=int, default=1,
                        help="time write, read, put and get this many times (fastest kept)")
    parser.add_argument("--s3", action="store_true", help="on a moto S3 server on 127.0.0.1")
    parser.add_argument("--synthetic", default="",
                        help="latent shapes CxFxHxW (comma list): synthetic Wan-recipe "
                             "trajectories (synthetic.py) instead of --sources / --steps")
    parser.add_argument("--solver", default="euler,ab2",
                        help="synthetic trajectories' solvers (euler | ab2, comma list)")
    args = parser.parse_args()
    server = None
    if args.s3:
        server = start_loopback_s3("bench-codec")
        root = "s3://bench-codec"
    else:
        root = tempfile.mkdtemp(prefix="bench-codec-")
    print(f"store {'loopback S3' if args.s3 else 'local folder'}, zarr encoding, "
          f"{args.samples} trajectories per run, best of {args.repeat}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}")
    try:
        warm, wl, wfp = trajectories("analytic", 4, 4)  # imports and first-call costs, untimed
        for codec in args.codecs.split(","):
            run(f"{root}/warmup-{codec}", warm, wl, wfp, codec, 4)
        if args.synthetic:
            runs = [(f"synth-{solver}", lambda shape=shape, solver=solver:
                     synthetic_trajectories(shape, args.samples, solver))
                    for shape in args.synthetic.split(",") for solver in args.solver.split(",")]
        else:
            runs = [(source, lambda source=source, steps=steps:
                     trajectories(source, steps, args.samples))
                    for source in args.sources.split(",")
                    for steps in (int(s) for s in args.steps.split(","))]
        for source, build in runs:
            records, layout, fp = build()
            steps = layout.num_steps
            for codec in args.codecs.split(","):
                shape = "x".join(map(str, layout.latent_shape))
                r = run(f"{root}/{source}-{steps}-{shape}-{codec}", records, layout, fp, codec,
                        args.per_shard, args.repeat)
                print(f"{source:9s} {steps:2d} steps latent {'x'.join(map(str, layout.latent_shape))} "
                      f"{codec:10s} state x raw {r['state_x_raw']:.3f}  shard x raw "
                      f"{r['shard_x_raw']:.3f}  write {r['write_mbs']:6.1f} MB/s / put "
                      f"{r['put_mbs']:6.1f} = {r['write_mbs'] / r['put_mbs']:.2f}  read "
                      f"{r['read_mbs']:6.1f} MB/s / get {r['get_mbs']:6.1f} = "
                      f"{r['read_mbs'] / r['get_mbs']:.2f}  exact {r['exact']}", flush=True)
    finally:
        if server is not None:
            server.stop()
        elif not args.s3:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
