"""Secrets out of what is recorded: every writer of a config or report passes it through here.

Manifests (their ``extra``: the job config and report), job reports, the job's status file,
``run.toml``, ``run_state.json``, ``report.json``, eval JSON, sidecars and checkpoint
``state.json`` are read by many people and copied around; a storage credential in one of them
is leaked. URLs with a password are refused where they come in (``store.refuse_url_credentials``)
and profiles may not hold credentials, but a config can still carry one in a field nobody
opens as storage (a Ray address, a dict of options): so the writers redact as well.

Redacted: the value of any key named like a credential (``store.CREDENTIAL_KEYS``: key, secret,
token, password, ...; at any depth) and the password of any ``scheme://user:password@host`` inside
any string. Everything else is kept as it is.
"""

from __future__ import annotations

import re
from typing import Any

from .store import CREDENTIAL_KEYS

REDACTED = "***"
# scheme://[user]:password@ anywhere in a string (a URL inside an error message too); the
# password stops at the first "@", "/" or whitespace, as urlsplit reads it
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*):(?P<password>[^\s@/]+)@")


def redact_text(text: str) -> str:
    """``text`` with the password of every URL in it masked."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}:{REDACTED}@", text)


def redact_secrets(value: Any) -> Any:
    """A copy of ``value`` (dicts, lists, tuples, strings, scalars) with credentials masked;
    the input is left untouched (the caller may still need the real values)."""
    if isinstance(value, dict):
        return {k: _masked(v) if str(k).lower() in CREDENTIAL_KEYS else redact_secrets(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact_secrets(v) for v in value]
    if isinstance(value, tuple):
        return tuple(redact_secrets(v) for v in value)
    if isinstance(value, str):
        return redact_text(value)
    return value


def _masked(value: Any) -> Any:
    """A credential's value masked; an empty or absent one stays so (it says "none set")."""
    if value is None or value == "" or isinstance(value, bool):
        return value
    return REDACTED
