"""The analytic colour decoder: the teacher's own samples decode to objects of the prompt's
colour that move the prompt's way; `s2dit sample`'s renderer and PNG use the same decoder."""

from __future__ import annotations

import colorsys

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from teacher_jobs.preview import SCALE, ColourDecoder, colour_of_word
from teacher_jobs.sampler import cache_fingerprint, sample_latents
from teacher_jobs.teachers import open_sampling_side
from teacher_jobs.teachers.analytic import MOTIONS, AnalyticTeacher

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["a red ring moving left", "a green square moving right", "a blue cross moving left",
           "a red bar moving right", "a blue ring moving right"]
HUE_DEG = {"red": 0.0, "green": 120.0, "blue": 225.0}  # of NAMED_COLOURS (blue is 0.20, 0.38, 0.96)


def _hue_deg(rgb: np.ndarray) -> float:
    return 360.0 * colorsys.rgb_to_hsv(*(rgb / 255.0))[0]


def _object_mask(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> bool (H, W): the painted pixels (the background is near black)."""
    return frame.max(-1) > 0.5 * 255


def _shift(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """The circular (dy, dx) that moves mask a onto mask b best (the teacher's objects wrap)."""
    h, w = a.shape
    scores = {(dy, dx): float((np.roll(a, (dy, dx), axis=(0, 1)) & b).sum())
              for dy in range(-h // 2, h // 2) for dx in range(-w // 2, w // 2)}
    return max(scores, key=scores.get)


@pytest.fixture(scope="module")
def teacher_x0():
    teacher = AnalyticTeacher()
    x0 = sample_latents(teacher, PROMPTS, list(range(len(PROMPTS))), global_seed=0,
                        fingerprint_digest="preview-test")
    assert teacher.score(x0, PROMPTS)["adherence"] == 1.0  # the teacher is right: so must the picture be
    return teacher, x0


def test_teacher_samples_decode_in_their_colour_words_and_move_their_way(teacher_x0):
    teacher, x0 = teacher_x0
    frames = ColourDecoder.of_teacher(teacher).decode(x0)  # (N, F, H*16, W*16, 3)
    f, h, w = teacher.latent_shape[1:]
    assert frames.shape == (len(PROMPTS), f, h * SCALE, w * SCALE, 3) and frames.dtype == np.uint8
    for prompt, clip in zip(PROMPTS, frames):
        _, colour, _, _, motion = prompt.split()
        for frame in clip:
            mask = _object_mask(frame)
            assert 4 * SCALE**2 <= mask.sum() <= 9 * SCALE**2, prompt  # one 3x3 object, no noise blobs
            hue = _hue_deg(frame[mask].mean(0))
            assert min(abs(hue - HUE_DEG[colour]), 360 - abs(hue - HUE_DEG[colour])) < 20, (prompt, hue)
        dy, dx = MOTIONS[motion]
        small = clip[:, ::SCALE, ::SCALE]  # one pixel per latent pixel
        for t in range(f - 1):
            assert _shift(_object_mask(small[t]), _object_mask(small[t + 1])) == (dy, dx), (prompt, t)


def test_each_colour_word_is_its_own_pattern_read_back_from_the_means():
    teacher = AnalyticTeacher()
    decoder = ColourDecoder.of_teacher(teacher)
    assert decoder.words == teacher.config.colours
    truth = teacher.sample_true_data(PROMPTS, seed=3)
    weights = decoder.weights(truth)  # (N, F, H, W, K)
    for i, prompt in enumerate(PROMPTS):
        k = decoder.words.index(prompt.split()[1])
        modes = teacher.means[teacher.class_of(prompt)]  # (K, C*F*H*W)
        mode = modes[np.argmin(((modes - truth[i].reshape(1, -1)) ** 2).sum(1))]
        painted = np.abs(mode.reshape(teacher.latent_shape)).sum(0) > 0  # (F, H, W)
        # the drawn mode's pixels hold about 1 of the true colour; the others about 0
        assert abs(np.median(weights[i][..., k][painted]) - 1) < 0.15, prompt
        assert abs(np.median(weights[i][..., k][~painted])) < 0.1, prompt
    assert colour_of_word("teal") == colour_of_word("teal") != colour_of_word("red")


def test_sample_renderer_paints_each_chunk_as_it_comes(teacher_x0, tmp_path):
    teacher, x0 = teacher_x0
    fingerprint = cache_fingerprint(teacher, keep_steps=(0,), global_seed=0, half_dtype="float16",
                                    negative_prompt="")
    side = open_sampling_side(fingerprint)
    renderer = side.renderer(*teacher.latent_shape[-2:])
    latents = torch.from_numpy(x0)
    chunks = [renderer.push(chunk) for chunk in latents.split(2, dim=2)]  # streaming order
    assert renderer.finish() is None
    assert all(c is not None for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks, 1), side.decoder.decode(x0))
    png = iio.imread(side.save_preview(x0, str(tmp_path / "p.png")))
    f, h, w = teacher.latent_shape[1:]
    assert png.shape == (len(PROMPTS) * (h * SCALE + 2) - 2, f * (w * SCALE + 2) - 2, 3)
    red = png[: h * SCALE, : w * SCALE]  # prompt 0, frame 0
    assert _hue_deg(red[_object_mask(red)].mean(0)) < 20 or _hue_deg(red[_object_mask(red)].mean(0)) > 340
