"""What to say when a hub id (a Wan checkpoint's ``owner/name``) cannot be loaded.

A cluster job never downloads from the hub (README "Staging the teacher weights"), so a machine
that cannot reach it is the normal case: the error names the two ways on, staging the weights
(``s2dit teacher stage``) or a local folder. ``HF_HUB_OFFLINE`` set means the offline mode was
asked for: then the error says that the hub cache holds no copy instead.
"""

from __future__ import annotations

import os

# Exception classes (any in the chain's MROs) meaning "the hub was not reached": the HTTP
# client's (httpx, requests), the socket's and the hub library's own offline errors.
UNREACHABLE = frozenset({"ConnectionError", "TimeoutError", "TransportError", "NetworkError",
                         "TimeoutException", "ConnectError", "ConnectTimeout", "gaierror",
                         "OfflineModeIsEnabled", "LocalEntryNotFoundError"})
TRUE = {"1", "ON", "YES", "TRUE"}  # as huggingface_hub reads its boolean variables


def is_hub_id(source: str) -> bool:
    """``owner/name`` that is no local path."""
    return (source.count("/") == 1 and not source.startswith((".", "/", "~"))
            and not os.path.exists(source))


def offline_mode() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in TRUE


def hub_unreachable(exc: BaseException | None) -> bool:
    """Whether ``exc`` or an exception it was raised from says the hub could not be reached."""
    for _ in range(8):  # a bounded walk: wrappers of wrappers
        if exc is None:
            return False
        if any(cls.__name__ in UNREACHABLE for cls in type(exc).__mro__):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def hub_hint(repo_id: str, exc: BaseException, local: str) -> str:
    """What to do after loading hub id ``repo_id`` failed with ``exc``; ``local`` says how this
    command takes a local folder (e.g. "pass --teacher wan:DIR")."""
    download = f"`hf download {repo_id} --local-dir DIR`"
    if offline_mode():
        return (f"HF_HUB_OFFLINE is set and this machine's hub cache holds no copy of {repo_id}: "
                f"download it where the hub is reachable ({download}), copy DIR here and "
                f"{local}; or load a staged copy (`staged = URL` in [job.teacher])")
    if hub_unreachable(exc):
        return (f"The hub cannot be reached from here. Stage the weights once from a machine that "
                f"reaches it (`s2dit teacher stage {repo_id} --revision SHA --to URL`, then "
                f"`staged = URL` and `revision = SHA` in [job.teacher]), or download them there "
                f"({download}), copy DIR here and {local}")
    return (f"check the id and the revision (and HF_TOKEN in the environment for a gated "
            f"repository), or {local}")
