"""An immutable, case-insensitive view of HTTP header fields."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

__all__ = ["EMPTY_HEADERS", "Headers", "split_tokens"]

_intern = sys.intern


class Headers(Sequence[tuple[str, str]]):
    """Header fields in arrival order; look-ups by name ignore case.

    ``headers["Origin"]`` is the first value (KeyError if absent), ``headers.get_all(name)``
    every value, and iteration gives ``(name, value)`` pairs with names in lower case.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        # Names interned: every connection's "sec-websocket-key" is then one string, not one each.
        self._items = tuple([(_intern(name.lower()), value) for name, value in items])

    @classmethod
    def from_raw(cls, raw: Iterable[tuple[bytes, bytes]]) -> Headers:
        """Headers from raw ``(name, value)`` byte pairs, decoded as ISO-8859-1."""
        # Header values are ISO-8859-1 on the wire (RFC 9110 section 5.5).
        return cls([(n.decode("latin-1"), v.decode("latin-1")) for n, v in raw])

    @overload
    def __getitem__(self, key: int) -> tuple[str, str]: ...
    @overload
    def __getitem__(self, key: slice) -> Sequence[tuple[str, str]]: ...
    @overload
    def __getitem__(self, key: str) -> str: ...
    def __getitem__(
        self, key: int | slice | str
    ) -> tuple[str, str] | Sequence[tuple[str, str]] | str:
        if isinstance(key, str):
            value = self.get(key)
            if value is None:
                raise KeyError(key)
            return value
        return self._items[key]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            return self.get(key) is not None
        return key in self._items

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._items == other._items
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return f"Headers({list(self._items)!r})"

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        name = name.lower()
        for key, value in self._items:
            if key == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order."""
        name = name.lower()
        return [value for key, value in self._items if key == name]

    def get_list(self, name: str) -> list[str]:
        """The comma-separated items of every ``name`` field, stripped, case kept."""
        return [item for value in self.get_all(name) for item in split_tokens(value)]

    def tokens(self, name: str) -> list[str]:
        """The comma-separated tokens of every ``name`` field, stripped, in lower case."""
        return [item.lower() for item in self.get_list(name)]


def split_tokens(value: str) -> list[str]:
    """Split a comma-separated header value (RFC 9110 section 5.6.1) into stripped items."""
    return [item.strip() for item in value.split(",") if item.strip()]


#: No header fields: what a connection has before its handshake (``Headers`` is immutable).
EMPTY_HEADERS = Headers()
