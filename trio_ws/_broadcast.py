"""Fan-out to many connections: encode a message once, never wait on a slow member.

Each member's queue is its connection's bounded outgoing channel (``write_queue``). When it is
full, the room's policy applies: drop the message for that member (and count it), or close
the member with a code such as 1013 (try again later) or 1008 (policy violation).

A room with a ``backplane`` (see ``trio_ws._backplane``) also hands each broadcast to it, so
that the members of the room of the same name in other processes get it; the backplane calls
``deliver()`` with what other processes broadcast.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import trio

from ._connection import Role
from ._extensions import encode_message
from ._frames import Opcode, encode_frame
from ._websocket import _FRAME, _TEXT_OR_BYTES, WebSocketConnection

if TYPE_CHECKING:
    from ._backplane import Backplane

__all__ = ["Room", "SlowPolicy"]


class SlowPolicy(enum.Enum):
    """What a broadcast does for a member whose outgoing queue is full."""

    #: Skip the message for that member and count it in ``Room.dropped``.
    DROP = "drop"
    #: Close that member (with ``Room.close_code``) and forget it.
    CLOSE = "close"


class Room:
    """A set of connections that receive every ``broadcast()``.

    Members leave by themselves when their connection closes. ``broadcast()`` is a plain
    function: it queues the same frame bytes on every member and returns at once.

    With ``backplane`` (e.g. a ``RedisBackplane``), ``broadcast()`` also reaches the members of
    the room called ``name`` in every other process on that backplane.
    """

    def __init__(
        self,
        *,
        policy: SlowPolicy | str = SlowPolicy.DROP,
        close_code: int = 1013,
        close_reason: str = "too slow to keep up",
        name: str = "",
        backplane: Backplane | None = None,
    ) -> None:
        #: The room's name on its backplane (rooms of the same name in other processes).
        self.name = name
        self.backplane = backplane
        self.policy = SlowPolicy(policy)
        self.close_code = close_code
        self.close_reason = close_reason
        self._members: dict[WebSocketConnection, int] = {}  # connection -> messages dropped
        #: Messages dropped for slow members since the room was made.
        self.dropped = 0
        #: Members closed by the CLOSE policy since the room was made.
        self.closed_slow = 0
        if backplane is not None:
            backplane.attach(self)

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, ws: object) -> bool:
        return ws in self._members

    def __iter__(self) -> Iterator[WebSocketConnection]:
        return iter(list(self._members))

    def add(self, ws: WebSocketConnection) -> None:
        """Add a member; it is removed when its connection closes."""
        if ws in self._members or ws.closed:
            return
        self._members[ws] = 0
        ws._on_close.append(lambda: self.discard(ws))

    def discard(self, ws: WebSocketConnection) -> None:
        """Remove a member, if it is one."""
        self._members.pop(ws, None)

    @contextmanager
    def joined(self, ws: WebSocketConnection) -> Iterator[Room]:
        """``with room.joined(ws):`` membership for the block."""
        self.add(ws)
        try:
            yield self
        finally:
            self.discard(ws)

    def dropped_for(self, ws: WebSocketConnection) -> int:
        """Messages dropped for this member so far."""
        return self._members.get(ws, 0)

    def broadcast(self, message: str | bytes, *, exclude: WebSocketConnection | None = None) -> int:
        """Queue ``message`` for every member (but ``exclude``); return how many took it here.

        Never waits: a member whose queue is full gets the room's ``policy``. With a backplane,
        the message is also handed to it for the other processes (without waiting either).
        """
        delivered = self.deliver(message, exclude=exclude)
        if self.backplane is not None:
            self.backplane.publish(self.name, message)
        return delivered

    def deliver(self, message: str | bytes, *, exclude: WebSocketConnection | None = None) -> int:
        """``broadcast()`` to this process's members only (a backplane delivers with this)."""
        if isinstance(message, str):
            opcode, payload = Opcode.TEXT, message.encode("utf-8")
        else:
            opcode, payload = Opcode.BINARY, bytes(message)
        plain: tuple[int, bytes] | None = None
        shared: dict[Hashable, tuple[int, bytes]] = {}
        delivered = 0
        for ws in list(self._members):
            if ws is exclude:
                continue
            core = ws._core
            if not ws._sendable:
                continue
            item: Any
            if core.role is Role.CLIENT:
                item = (_TEXT_OR_BYTES, message)  # clients mask each frame anew
            elif not core.extensions:
                if plain is None:
                    plain = (_FRAME, encode_frame(opcode, payload))
                item = plain
            else:
                key = _shared_key(ws)
                if key is None:
                    item = (_TEXT_OR_BYTES, message)  # stateful compression: per member
                else:
                    item = shared.get(key)
                    if item is None:
                        rsv, data = encode_message(core.extensions, opcode, payload)
                        item = shared[key] = (_FRAME, encode_frame(opcode, data, rsv=rsv))
            if ws._idle and ws._fd is not None:
                # The member's writer is idle: write now, no task switch (see _write_now).
                frame = item[1] if item[0] == _FRAME else core.send_message(message)
                if ws._write_now(frame):
                    delivered += 1
                    continue
                if item[0] != _FRAME:
                    continue  # encoded already (compression state moved on): cannot requeue
            try:
                ws._enqueue_nowait(item)
            except trio.WouldBlock:
                self._slow(ws)
                continue
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                self.discard(ws)
                continue
            delivered += 1
        return delivered

    def _slow(self, ws: WebSocketConnection) -> None:
        if self.policy is SlowPolicy.DROP:
            self.dropped += 1
            self._members[ws] += 1
        else:
            self.closed_slow += 1
            self.discard(ws)
            ws.close_nowait(self.close_code, self.close_reason)


def _shared_key(ws: WebSocketConnection) -> Hashable | None:
    """A key shared by members whose extensions encode a message the same way, or None."""
    keys = []
    for ext in ws._core.extensions:
        key = getattr(ext, "shared_encoding_key", None)
        if key is None:
            return None
        keys.append(key)
    return tuple(keys)
