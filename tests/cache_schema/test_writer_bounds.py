"""The writer enforces what readers accept (issue 28): a record or a layout that every reader
would refuse is refused when the record is prepared (or the writer opened), naming the field,
before a byte is written; here each such value is first shown to be refused by the reader."""

from __future__ import annotations

import io

import pytest
from conftest import FINGERPRINT, make_records, small_layout

from cache_schema import CacheLayout, CacheWriter, RecordError
from cache_schema.bounds import MAX_SHARD_SAMPLES, MAX_TEXT_BYTES, bounded_stream
from cache_schema.encodings.wds import encode_shard, iter_shard
from cache_schema.fields import FIELD_NAMES
from cache_schema.writer import prepare_record, write_shard

LAYOUT = small_layout()


def _read_back(records: list[dict]) -> list[dict]:
    """What a reader makes of a tar of ``records`` encoded without the writer's checks."""
    tar = io.BytesIO(encode_shard(records))
    return list(iter_shard(bounded_stream(tar, LAYOUT, "shard.tar"), LAYOUT, FIELD_NAMES))


def _record(**values) -> dict:
    record = make_records(LAYOUT, 1)[0]
    prepare_record(record, LAYOUT)
    record.update(values)
    return record


@pytest.mark.parametrize("encoding", ["wds", "zarr"])
@pytest.mark.parametrize(("field", "value", "reader_says"), [
    ("prompt", "a" * (MAX_TEXT_BYTES + 1), "claims 1048577 bytes"),
    ("negative_prompt", "é" * (MAX_TEXT_BYTES // 2 + 1), "claims 1048578 bytes"),
    ("sample_id", "a.b", None),  # a WebDataset key ends at its first '.': the id is lost
    ("sample_id", "x" * 100, "longer than 100 bytes"),
], ids=["prompt", "negative_prompt", "sample_id-dot", "sample_id-long"])
def test_a_value_every_reader_refuses_is_refused_by_the_writer_naming_the_field(
        tmp_path, encoding, field, value, reader_says):
    record = _record(**{field: value})
    try:
        back = _read_back([record])
    except ValueError as exc:  # the reader's refusal (a long id: the tar encoder's, at the flush)
        assert reader_says and reader_says in str(exc)
    else:  # read back as no record at all
        assert reader_says is None and [r.get("sample_id") for r in back] != [record["sample_id"]]
    record.pop("checksums")
    url = str(tmp_path / "c")
    with CacheWriter(url, layout=LAYOUT, fingerprint=FINGERPRINT, encoding=encoding) as writer, \
            pytest.raises(RecordError, match=f"field '{field}'"):
        writer.write(record)
    with pytest.raises(RecordError, match=f"field '{field}'"):
        write_shard(url, [record], layout=LAYOUT, encoding=encoding, shard_name="s")
    assert not (tmp_path / "c" / "shards").exists() or not any((tmp_path / "c" / "shards").iterdir())


def test_values_at_the_bounds_are_written_and_read_back(tmp_path):
    record = make_records(LAYOUT, 1)[0]
    record["prompt"] = "a" * MAX_TEXT_BYTES
    record["sample_id"] = "f" * 64
    url = str(tmp_path / "c")
    with CacheWriter(url, layout=LAYOUT, fingerprint=FINGERPRINT, encoding="wds") as writer:
        writer.write(record)
    from cache_schema import CacheReader

    (back,) = CacheReader(url).iter_records(fields=("sample_id", "prompt"))
    assert back["prompt"] == record["prompt"] and back["sample_id"] == record["sample_id"]


def test_shard_sizes_and_layouts_no_reader_accepts_are_refused_before_any_write(tmp_path):
    url = str(tmp_path / "c")
    with pytest.raises(ValueError, match=r"samples_per_shard must be in \[1, 1048576\]"):
        CacheWriter(url, layout=LAYOUT, fingerprint=FINGERPRINT,
                    samples_per_shard=MAX_SHARD_SAMPLES + 1)
    # states of 8 x 16 x 21 x 2048 x 2048 halves: 22 GB, beyond a tar member's 11 octal digits
    huge = CacheLayout(latent_shape=(16, 21, 2048, 2048), num_steps=8, keep_steps=tuple(range(8)),
                       text_dim=8, max_text_len=6)
    with pytest.raises(ValueError, match="tar member's size field"):
        CacheWriter(url, layout=huge, fingerprint=FINGERPRINT, encoding="wds")
    CacheWriter(url, layout=huge, fingerprint=FINGERPRINT, encoding="zarr").abort()
    assert not (tmp_path / "c" / "shards").exists() or not any((tmp_path / "c" / "shards").iterdir())
