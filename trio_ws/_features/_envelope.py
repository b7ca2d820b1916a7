"""Envelopes: put a broadcast's position on what members receive, so clients can resume.

A ``Room(history=..., envelope=...)`` turns each broadcast into what goes on the wire with
``envelope(message, position)``, once per broadcast (all members share the result), and the
same way for each message it replays.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from ._history import Position

__all__ = ["Envelope", "json_envelope"]

#: ``envelope(message, position) -> wire message``: ``str`` goes as text, ``bytes`` as binary.
Envelope = Callable[[str | bytes, Position], str | bytes]


def json_envelope(message: str | bytes, position: Position) -> str:
    """``{"offset": 7, "epoch": "...", "data": message}`` as a JSON text message.

    ``data`` is the message as a JSON string. Raises TypeError for a binary message (JSON has
    no bytes): give ``Room(envelope=...)`` a function of your own for binary messages.
    """
    if not isinstance(message, str):
        raise TypeError("json_envelope carries text messages only, not bytes")
    return json.dumps(
        {"offset": position.offset, "epoch": position.epoch, "data": message},
        ensure_ascii=False,
        separators=(",", ":"),
    )
