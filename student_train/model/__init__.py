"""The S2DiT student: LCHA and SSA blocks in a sandwich layout, with streaming state."""

from .config import StudentConfig, parse_block
from .sandwich import S2DiT
from .streaming import StreamState

__all__ = ["S2DiT", "StreamState", "StudentConfig", "parse_block"]
