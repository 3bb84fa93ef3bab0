"""Sample identity (DESIGN 3.1): the normalised prompt and the stable sample id.

Part of the cache contract: a reader, an evaluator or a second teacher job must derive the
same id for the same (prompt, seed, fingerprint) to find or regenerate a sample.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_SPACE = re.compile(r"\s+")


def normalise_prompt(prompt: str) -> str:
    """NFC, trimmed, inner whitespace collapsed: the form stored in ``prompt`` and hashed into
    the sample id (case and compatibility forms are kept: they reach the text encoder)."""
    return _SPACE.sub(" ", unicodedata.normalize("NFC", prompt)).strip()


def make_sample_id(normalised_prompt: str, seed: int, fingerprint_digest: str) -> str:
    """Stable id of one trajectory: hash of (normalised prompt, seed, teacher fingerprint)."""
    key = f"{normalised_prompt}\x1f{int(seed)}\x1f{fingerprint_digest}".encode()
    return hashlib.sha256(key).hexdigest()[:32]
