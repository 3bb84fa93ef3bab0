"""Stage 2's check that a KD model fits its cache: the same teacher with or without the causal
pairs fits; another teacher setup is refused with both digests named."""

from __future__ import annotations

import pytest

from cache_schema import (
    CAUSAL_CHUNK_KEY,
    CacheLayout,
    FingerprintMismatch,
    fingerprint_digest,
    teacher_digest,
)
from student_train.model import StudentConfig
from student_train.self_forcing.source import KDSource, check_fits

TEACHER = {"teacher": "analytic", "config": {"shift": 3.0, "task": "memory"}, "solver": "euler"}
LAYOUT = CacheLayout(latent_shape=(4, 5, 8, 8), num_steps=4, keep_steps=(0, 1, 2, 3), text_dim=32,
                     max_text_len=8)


def kd_from(fingerprint: dict) -> KDSource:
    return KDSource(url="kd/checkpoints/step_000010", step=10, model_config=StudentConfig(),
                    weights={}, plan={}, manifest={"fingerprint_digest": fingerprint_digest(fingerprint)})


def fits(kd: KDSource, cache_fingerprint: dict) -> None:
    check_fits(kd, LAYOUT, fingerprint_digest(cache_fingerprint), "cache@train",
               teacher_digest(cache_fingerprint))


def test_kd_without_pairs_fits_the_same_teachers_cache_with_pairs():
    with_pairs = {**TEACHER, CAUSAL_CHUNK_KEY: 1}
    assert fingerprint_digest(with_pairs) != fingerprint_digest(TEACHER)  # the caches differ
    assert teacher_digest(with_pairs) == teacher_digest(TEACHER) == fingerprint_digest(TEACHER)
    fits(kd_from(TEACHER), with_pairs)
    fits(kd_from(TEACHER), TEACHER)
    fits(kd_from(with_pairs), with_pairs)


def test_another_teacher_setup_is_refused_with_or_without_pairs():
    other = {**TEACHER, "config": {"shift": 5.0, "task": "memory"}}
    for cache in (other, {**other, CAUSAL_CHUNK_KEY: 1}):
        with pytest.raises(FingerprintMismatch, match="different teachers"):
            fits(kd_from(TEACHER), cache)

