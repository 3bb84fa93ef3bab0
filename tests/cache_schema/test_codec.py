"""Value codecs (issue 18): raw, zstd and trajectory decode every stored half-precision value bit
for bit, on real Euler and UniPC trajectories (analytic and tiny Wan), with keep_steps subsets;
stock zarr still reads the groups; convert goes between codecs both ways; a flipped byte is
caught naming the shard and the sample."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import zarr

from cache_schema import CacheReader, CacheWriter, IntegrityError, verify_cache
from cache_schema.codecs import UnknownCodec, codec_names, get_codec
from cache_schema.codecs.bits import apply_residual, residual
from cache_schema.convert import convert
from cache_schema.errors import OperationRefused
from teacher_jobs.sampler import cache_fingerprint, record_trajectories
from teacher_jobs.teachers import build_teacher

TENSORS = ("noise", "states", "v_cond", "v_uncond", "x0", "text_emb", "neg_text_emb", "sigmas",
           "guidance", "timesteps", "expert")
WAN = {"height": 32, "width": 32, "frames": 9, "max_text_len": 16, "shift": 3.0, "guidance": (4.0, 3.0)}


def trajectories(kind: str, keep: tuple[int, ...], *, steps: int = 8, half: str = "float16"):
    """(records, layout, fingerprint) recorded by a real teacher loop."""
    if kind == "analytic":
        teacher = build_teacher("analytic", num_steps=steps)
        prompts = ["a red square moving left", "a blue ring moving up", "a green bar moving down"]
    else:  # wan-euler / wan-unipc: the tiny random two-expert Wan 2.2
        teacher = build_teacher("wan-tiny", num_steps=steps, solver=kind.split("-")[1], **WAN)
        prompts = ["a red cat running left", "blue ocean wave at night", "a green car"]
    records, _ = record_trajectories(teacher, prompts, [0, 1, 2], global_seed=0, keep_steps=keep,
                                     half_dtype=half)
    fp = cache_fingerprint(teacher, keep_steps=keep, global_seed=0, half_dtype=half,
                           negative_prompt="")
    return records, teacher.layout(keep, half), fp


def write(url: str, records, layout, fp, codec: str, encoding: str = "zarr") -> str:
    with CacheWriter(url, layout=dataclasses.replace(layout, codec=codec), fingerprint=fp,
                     encoding=encoding, samples_per_shard=2) as writer:
        for record in records:
            writer.write(dict(record))
    return url


def assert_bits_equal(expected, got):
    assert [r["sample_id"] for r in expected] == [r["sample_id"] for r in got]
    for a, b in zip(expected, got):
        for name in TENSORS:
            if name in a:
                assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
                assert a[name].tobytes() == b[name].tobytes(), (a["sample_id"], name)


def test_bit_residuals_invert_exactly_for_every_16_bit_pattern():
    every = np.arange(2**16, dtype=np.uint16).view(np.float16)
    rng = np.random.default_rng(0)
    for predicted in (every[::-1].copy(), rng.permutation(every), np.zeros_like(every)):
        back = apply_residual(predicted, residual(every, predicted))
        assert back.view(np.uint16).tobytes() == every.view(np.uint16).tobytes()


@pytest.mark.parametrize("kind, keep", [
    ("analytic", tuple(range(8))), ("analytic", (0, 3, 4, 7)), ("analytic", (1, 2, 6)),
    ("wan-euler", tuple(range(8))), ("wan-unipc", tuple(range(8))), ("wan-unipc", (0, 2, 5, 6)),
])
def test_every_codec_round_trips_real_trajectories_bit_for_bit(tmp_path, kind, keep):
    records, layout, fp = trajectories(kind, keep)
    sizes = {}
    for codec in codec_names():
        url = write(str(tmp_path / codec), records, layout, fp, codec)
        reader = CacheReader(url)
        assert reader.layout.codec == codec  # recorded in the manifest layout
        assert_bits_equal(records, list(reader.iter_records(verify=True)))
        # a subset of the stored steps decodes to the same bits too
        subset = [keep[-1], keep[0]] if len(keep) > 1 else [keep[0]]
        cut = list(reader.iter_records(fields=["states", "v_cond"], steps=subset))
        for a, b in zip(records, cut):
            rows = [keep.index(s) for s in subset]
            assert a["states"][rows].tobytes() == b["states"].tobytes()
            assert a["v_cond"][rows].tobytes() == b["v_cond"].tobytes()
        sizes[codec] = sum(s.bytes for s in reader.shards)
    assert sizes["trajectory"] < sizes["zstd"] <= sizes["raw"] * 1.01


def test_caches_coded_before_the_fast_coder_still_decode(tmp_path, monkeypatch):
    """Session 7's caches were coded at Blosc level 5 with automatic blocks; the level and the
    block size live in each Blosc frame's header, so today's reader decodes them unchanged (and
    their residuals are the ones today's coder stores: same predictors, same bits)."""
    from cache_schema.codecs import plain

    records, layout, fp = trajectories("wan-unipc", (0, 2, 5, 6))
    monkeypatch.setattr(plain, "ZSTD_LEVEL", 5)
    monkeypatch.setattr(plain, "BLOCK_BYTES", 0)
    old = {codec: write(str(tmp_path / f"old-{codec}"), records, layout, fp, codec)
           for codec in ("zstd", "trajectory")}
    monkeypatch.undo()
    for codec, url in old.items():
        shard = CacheReader(url).shards[0]
        meta = zarr.open_group(f"{url}/{shard.path}", mode="r")["states"].metadata.to_dict()
        inner = meta["codecs"][0]["configuration"]["codecs"]
        assert [c["configuration"]["clevel"] for c in inner if c["name"] == "blosc"] == [5]
        assert_bits_equal(records, list(CacheReader(url).iter_records(verify=True)))
        new = write(str(tmp_path / f"new-{codec}"), records, layout, fp, codec)
        assert_bits_equal(list(CacheReader(url).iter_records()),
                          list(CacheReader(new).iter_records()))


def test_trajectory_coding_at_a_large_latent_picks_predictors_on_a_subset_and_is_exact():
    """Past CHOICE_ELEMENTS latent values the predictor is picked on a strided subset; the
    coded record still decodes bit for bit, and the subset's pick is the full pick here."""
    from cache_schema.codecs import trajectory as traj
    from cache_schema.fields import CacheLayout

    rng = np.random.default_rng(0)
    shape, keep = (4, 3, 48, 64), (0, 2, 5, 7)  # 36864 latent values
    sig = np.linspace(1.0, 0.1, 8, dtype=np.float32)
    target = rng.standard_normal(shape, np.float32)
    x = noise = rng.standard_normal(shape, np.float32)
    rec = {"noise": noise.astype(np.float16), "sigmas": sig[list(keep)],
           "guidance": np.full(len(keep), 3.0, np.float32)}
    kept = {"states": [], "v_cond": [], "v_uncond": []}
    for i in range(8):
        vc = (x - target) / sig[i]
        vu = vc * np.float32(0.9)
        if i in keep:
            for name, v in (("states", x), ("v_cond", vc), ("v_uncond", vu)):
                kept[name].append(v.astype(np.float16))
        x = x + ((sig[i + 1] if i < 7 else 0) - sig[i]) * (vu + 3 * (vc - vu))
    rec.update({k: np.stack(v) for k, v in kept.items()}, x0=x.astype(np.float16))
    layout = CacheLayout(latent_shape=shape, num_steps=8, keep_steps=keep, text_dim=8,
                         max_text_len=4, codec="trajectory")
    monkey = traj.CHOICE_ELEMENTS
    try:
        traj.CHOICE_ELEMENTS = 1 << 12  # a stride of 9 on this latent
        assert traj._subset(rec)["states"].shape == (4, 4096)
        coded = get_codec("trajectory").transform(rec, layout)
        traj.CHOICE_ELEMENTS = 1 << 20  # every value
        assert get_codec("trajectory").transform(rec, layout)[traj.PREDICTORS_KEY].tolist() == \
            coded[traj.PREDICTORS_KEY].tolist()
    finally:
        traj.CHOICE_ELEMENTS = monkey
    back = get_codec("trajectory").untransform(coded, rec, layout)
    for name in kept:
        assert back[name].tobytes() == rec[name].tobytes(), name


def test_stock_zarr_reads_plain_arrays_and_sees_the_codec(tmp_path):
    records, layout, fp = trajectories("analytic", tuple(range(8)))
    for codec in ("zstd", "trajectory"):
        url = write(str(tmp_path / codec), records, layout, fp, codec)
        shard = CacheReader(url).shards[0]
        group = zarr.open_group(f"{url}/{shard.path}", mode="r")
        assert group.attrs["s2dit_codec"] == codec
        np.testing.assert_array_equal(group["x0"][:], np.stack([r["x0"] for r in records[:2]]))
        assert list(group["sample_id"][:]) == [r["sample_id"] for r in records[:2]]
        states = group["states"][:]
        if codec == "zstd":  # plain values, blosc-zstd chunks
            np.testing.assert_array_equal(states, np.stack([r["states"] for r in records[:2]]))
        else:  # residuals: small unsigned integers, not the states
            assert states.dtype == np.uint16 and np.median(states) < 64


def test_convert_goes_between_codecs_and_encodings_both_ways(tmp_path):
    records, layout, fp = trajectories("wan-unipc", (0, 2, 5, 6))
    src = write(str(tmp_path / "wds"), records, layout, fp, "raw", encoding="wds")
    coded = str(tmp_path / "traj")
    result = convert(src, to="zarr", codec="trajectory", output=coded, progress=False)
    assert result.manifest.layout.codec == "trajectory"
    assert result.manifest.extra["args"]["source_codec"] == "raw"
    back = str(tmp_path / "back")
    convert(coded, to="wds", codec="raw", output=back, progress=False)
    zstd = str(tmp_path / "zstd")
    convert(coded, codec="zstd", output=zstd, progress=False)  # codec only, same encoding
    for url in (coded, back, zstd):
        assert_bits_equal(records, list(CacheReader(url).iter_records(verify=True)))
    with pytest.raises(OperationRefused, match="zarr"):
        convert(src, codec="trajectory", output=str(tmp_path / "no"), progress=False)
    with pytest.raises(OperationRefused, match="already"):
        convert(coded, codec="trajectory", output=str(tmp_path / "no2"), progress=False)


def test_unknown_codec_and_wds_with_a_coded_layout_are_refused(tmp_path):
    records, layout, fp = trajectories("analytic", (0, 4))
    with pytest.raises(UnknownCodec, match="raw, zstd, trajectory"):
        dataclasses.replace(layout, codec="lz4")
    with pytest.raises(ValueError, match="--encoding zarr"):
        write(str(tmp_path / "x"), records, layout, fp, "trajectory", encoding="wds")
    assert get_codec("trajectory").step_chunks is False


def _flip_a_byte_of_sample(url: str, shard_index: int, sample: int) -> str:
    """Flip one byte in the middle of ``sample``'s states chunk; returns its sample id."""
    reader = CacheReader(url)
    shard = reader.shards[shard_index]
    path = Path(f"{url}/{shard.path}/states/c/0/0/0/0/0/0")
    data = bytearray(path.read_bytes())
    count = shard.samples
    index = np.frombuffer(bytes(data[-(16 * count + 4):-4]), dtype="<u8").reshape(count, 2)
    offset, size = (int(v) for v in index[sample])
    data[offset + size // 2] ^= 0x5A
    path.write_bytes(bytes(data))
    return list(reader.read_shard(shard, ["sample_id"]))[sample]["sample_id"]


def test_a_flipped_byte_in_a_trajectory_shard_is_named_by_verify_and_refused(tmp_path):
    from student_train.data import CacheStream, LoaderConfig

    records, layout, fp = trajectories("analytic", tuple(range(8)))
    url = write(str(tmp_path / "traj"), records, layout, fp, "trajectory")
    full = next(i for i, s in enumerate(CacheReader(url).shards) if s.samples == 2)
    sid = _flip_a_byte_of_sample(url, full, 1)
    shard = CacheReader(url).shards[full].path
    report = verify_cache(url, deep=True)
    assert not report.ok
    assert any(shard in p and sid in p for p in report.problems), report.problems
    with pytest.raises(IntegrityError, match=sid) as exc:
        list(CacheReader(url).iter_records(verify=True))
    assert exc.value.shard.endswith(shard)
    fields = ["states", "v_cond", "v_uncond", "x0"]
    with pytest.raises(IntegrityError, match=sid):  # within the first epoch
        for _ in zip(CacheStream(url, fields=fields, config=LoaderConfig(seed=0)), range(3)):
            pass
    stream = CacheStream(url, fields=fields, config=LoaderConfig(seed=0, skip_corrupt_shards=True))
    seen = {r["sample_id"] for r, _ in zip(stream, range(4))}
    assert sid not in seen and len(seen) == 1 and set(stream.skipped_shards) == {shard}


def test_the_job_option_and_flag_carry_the_codec():
    import argparse

    from teacher_jobs.cli_args import add_generate_args, config_from_args
    from teacher_jobs.config import JobConfig

    parser = argparse.ArgumentParser()
    add_generate_args(parser)
    args = parser.parse_args(["--encoding", "zarr", "--codec", "trajectory"])
    assert config_from_args(args).codec == "trajectory"
    assert JobConfig().codec == "raw"
    with pytest.raises(ValueError, match="wds encoding stores plain .npy members only"):
        JobConfig(codec="zstd")  # the default encoding is wds: its own check refuses it
    with pytest.raises(ValueError, match="codec must be one of"):
        JobConfig(codec="lz4", encoding="zarr")


def test_one_pass_checksums_equal_the_field_and_step_checksums():
    """record_and_step_checksums (each step field's bytes crc'd once, the field's crc combined
    from its steps') stores exactly the strings of record_checksums + step_checksums."""
    import zlib

    from cache_schema.checksum import record_checksums
    from cache_schema.encodings.step_checksums import (
        crc32_combine,
        record_and_step_checksums,
        step_checksums,
    )

    rng = np.random.default_rng(1)
    for n1, n2 in [(0, 5), (7, 0), (1, 1), (100, 3333), (4096, 65536)]:
        a, b = rng.bytes(n1), rng.bytes(n2)
        assert crc32_combine(zlib.crc32(a), zlib.crc32(b), n2) == zlib.crc32(a + b)
    records, _, _ = trajectories("wan-unipc", (0, 2, 5, 6))
    for record in records:
        want = {**record_checksums(record), **step_checksums(record)}
        assert record_and_step_checksums(record) == want
        flipped = dict(record, states=record["states"].copy())
        flipped["states"].view(np.uint16)[1, 0, 0, 0, 0] ^= 1
        got = record_and_step_checksums(flipped)
        assert got["states"] != want["states"] and got["states[1]"] != want["states[1]"]
        assert got["states[0]"] == want["states[0]"]
