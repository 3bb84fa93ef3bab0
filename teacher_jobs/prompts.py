"""Prompt validation (what a teacher job refuses, and why). Normalisation and sample ids are
part of the cache contract: ``cache_schema.sample_id``."""

from __future__ import annotations

import unicodedata

from cache_schema.bounds import text_problem
from cache_schema.sample_id import normalise_prompt


def decode_prompt(raw: str | bytes) -> tuple[str | None, str | None]:
    """(text, None) or (None, reason) for raw input that may be bytes."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, f"invalid UTF-8 at byte {exc.start}"
    if not isinstance(raw, str):
        return None, f"prompt must be text, got {type(raw).__name__}"
    return raw, None


def validate_prompt(raw: str | bytes, *, max_tokens: int | None = None,
                    count_tokens=None) -> str | None:
    """The reason a prompt is rejected, or None when it is usable."""
    text, reason = decode_prompt(raw)
    if reason:
        return reason
    assert text is not None
    if any(unicodedata.category(c) == "Cs" for c in text):
        return "contains lone surrogates (not valid Unicode text)"
    if not text.strip():
        return "empty or whitespace only"
    too_long = text_problem("prompt", normalise_prompt(text))  # what every cache reader accepts
    if too_long:
        return too_long
    if any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in text):
        return "contains control characters"
    if max_tokens is not None and count_tokens is not None:
        n = count_tokens(normalise_prompt(text))
        if n > max_tokens:
            return f"{n} tokens exceed the text encoder's limit of {max_tokens}"
    return None

