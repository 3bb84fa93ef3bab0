"""Physical encodings of the logical schema behind one interface (``base.Encoding``) and one
registry keyed by the manifest's encoding name (``registry``)."""

from .base import Encoding, group_hash, object_path
from .registry import (
                       DEFAULT_ENCODING,
                       encoding_names,
                       get_encoding,
                       register_encoding,
                       unregister_encoding,
)

__all__ = ["DEFAULT_ENCODING", "Encoding", "encoding_names", "get_encoding", "group_hash",
           "object_path", "register_encoding", "unregister_encoding"]
