"""One registry of named plug-ins, keyed by the name a manifest or a config carries.

Every kind of plug-in (encodings, value codecs, training stages) is a ``Registry``: the one
place that holds its variants, so everything else asks ``get(name)`` or ``names()`` (the CLI's
``choices``) and a new variant is its own file plus one ``register`` call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named items of one kind, in registration order.

    ``kind`` names them in messages ("encoding"); ``what`` is what carries the name ("a
    manifest"); ``unknown`` is the error an unknown name raises; ``hint`` tells how a new one is
    added."""

    def __init__(self, kind: str, *, what: str, hint: str,
                 unknown: type[Exception] = ValueError,
                 describe: Callable[[T], str] | None = None):
        self.kind, self.what, self.hint, self.unknown = kind, what, hint, unknown
        self._describe = describe
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T, *, replace: bool = False) -> T:
        """Add ``item`` under ``name``; returns it. A name already taken is refused unless
        ``replace`` (e.g. a benchmark swapping a parser)."""
        if not isinstance(name, str) or not name or "/" in name or name != name.strip():
            raise ValueError(f"bad {self.kind} name {name!r}: a short word {self.what} can carry")
        if name in self._items and not replace:
            held = f" ({self._describe(self._items[name])})" if self._describe else ""
            raise ValueError(f"{self.kind} {name!r} is already registered{held}; pass "
                             "replace=True to swap it")
        self._items[name] = item
        return item

    def unregister(self, name: str) -> None:
        """Remove a registered item (tests and plug-ins clean up with this)."""
        if self._items.pop(name, None) is None:
            raise self.unknown(self.unknown_message(name))

    def get(self, name: str) -> T:
        """The item ``name`` names; ``unknown`` (listing the known names) otherwise."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise self.unknown(self.unknown_message(name)) from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def values(self) -> tuple[T, ...]:
        return tuple(self._items.values())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def unknown_message(self, name: object) -> str:
        return f"unknown {self.kind} {name!r}: use one of {', '.join(self._items)} ({self.hint})"
