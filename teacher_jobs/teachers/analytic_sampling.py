"""The analytic teacher's sampling side (DESIGN 4.3): the teacher itself, rebuilt from the
cache's fingerprint, is the text encoder (its fixed token-embedding table) and the oracle;
frames are the latents painted in the colours of its colour words (preview.ColourDecoder)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from ..analytic_corpus import TEMPLATE
from ..preview import ColourDecoder, save_latent_preview
from .analytic import AnalyticTeacher
from .sampling import OracleSide, Renderer


class ColourRenderer:
    """Each latent chunk painted in the teacher's colours as soon as it is pushed (no range
    set by the whole clip: a pixel's colour is its own projection on the colour patterns)."""

    mode = "colour decoder, chunk by chunk"

    def __init__(self, decoder: ColourDecoder):
        self.decoder = decoder

    def push(self, latents: torch.Tensor) -> np.ndarray:
        return self.decoder.decode(latents.float().cpu().numpy())

    def finish(self) -> None:
        return None


class AnalyticSamplingSide(OracleSide):
    fps = 4.0  # one latent frame is one picture: a slow default

    def __init__(self, kind: str, fingerprint: dict[str, Any]):
        self.kind = kind
        self.oracle: AnalyticTeacher = AnalyticTeacher.from_fingerprint(fingerprint)
        self.text = self.oracle
        self.decoder = ColourDecoder.of_teacher(self.oracle)  # 16x blocks: even sizes for H.264

    def renderer(self, height: int, width: int) -> Renderer:
        del height, width  # every latent pixel becomes a decoder.scale block
        return ColourRenderer(self.decoder)

    def scores(self, x0: np.ndarray, prompts: list[str]) -> dict[str, Any]:
        """The oracle's scores; a clip streamed longer than the trained one by the same task at
        its length (the tasks are procedural: eval scores 4x the same way)."""
        frames = x0.shape[2]
        oracle = self.oracle if frames == self.oracle.latent_shape[1] else self.oracle.at_length(frames)
        return oracle.score(x0, prompts)

    def save_preview(self, x0: np.ndarray, path: str) -> str:
        """A PNG frame strip of (N, C, F, H, W) latents in the teacher's colours."""
        return save_latent_preview(x0, path, self.decoder)

    def rendering_note(self) -> str:
        return (f"Colours: each latent pixel painted in the colour word whose pattern explains it "
                f"(teacher_jobs.preview.ColourDecoder), {self.decoder.scale}x blocks, "
                f"{self.fps:g} fps.")

    def at_steps(self, steps: int) -> AnalyticTeacher:
        if steps == self.oracle.num_steps:
            return self.oracle
        return AnalyticTeacher(replace(self.oracle.config, num_steps=steps))

    def report_prompts(self, trained: list[str], n_trained: int = 3) -> list[tuple[str, str]]:
        teacher, classes, chosen = self.oracle, set(), []
        for p in trained:
            if teacher.class_of(p) not in classes and len(chosen) < n_trained:
                classes.add(teacher.class_of(p))
                chosen.append((p, "trained"))
        trained_classes = {teacher.class_of(p) for p in trained}
        unseen = [TEMPLATE.format(obj=o, colour=c, motion=m)
                  for i, (o, c, m) in enumerate(teacher.classes) if i not in trained_classes]
        return chosen + [(unseen[0], "unseen")] if unseen else chosen

    def nearest_prompts(self, x0: np.ndarray) -> list[str]:
        teacher = self.oracle
        flat = np.asarray(x0, dtype=np.float64).reshape(len(x0), -1)
        modes = teacher.means.reshape(-1, flat.shape[1])
        d2 = (flat ** 2).sum(1)[:, None] - 2 * flat @ modes.T + (modes ** 2).sum(1)[None]
        return [TEMPLATE.format(obj=o, colour=c, motion=m) for o, c, m in
                (teacher.classes[k // teacher.config.modes_per_class] for k in d2.argmin(1))]

    def same_class(self, a: str, b: str) -> bool:
        return self.oracle.class_of(a) == self.oracle.class_of(b)
