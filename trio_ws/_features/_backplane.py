"""Backplanes: a room's broadcasts reach the rooms of the same name in other processes.

A ``Room`` made with ``backplane=`` (or by ``backplane.room(name)``) delivers each broadcast to
its own members at once, then hands it to the backplane with ``publish(name, message)``, which
must not wait. The backplane carries it to the other processes and calls ``room.deliver()``
there with what they receive.

``LocalBackplane`` is the embedded default: one process, nothing is carried anywhere.
``RedisBackplane`` (``trio_ws._features._redis``) carries messages over Redis pub/sub.

Wire format of one backplane message (a batch of room messages from one process)::

    version (1 byte, 1) | sender id (16 bytes)
    then per room message: sequence (u64) | kind (u8: 0 binary, 1 text) | length (u32) | payload

Sequences count each room's broadcasts per sender from 1, so that a receiver drops what it has
already delivered (duplicates) and counts what never arrived (gaps).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Any

import trio

from ._broadcast import Room

__all__ = ["LocalBackplane", "Rooms", "decode_batch", "encode_batch"]

VERSION = 1
SENDER_SIZE = 16
_HEAD = struct.Struct("!B16s")
_ENTRY = struct.Struct("!QBI")
_BINARY, _TEXT = 0, 1


class Rooms:
    """The rooms of a backplane in this process, by name: what ``LocalBackplane`` and
    ``RedisBackplane`` share (``room()``, ``attach()``)."""

    def __init__(self) -> None:
        #: Rooms attached to this backplane, by name.
        self.rooms: dict[str, Room] = {}

    def room(self, name: str = "", **options: Any) -> Room:
        """The room ``name`` on this backplane, made with ``Room(**options)`` the first time."""
        room = self.rooms.get(name)
        if room is None:
            room = Room(name=name, backplane=self, **options)
        elif options:
            raise ValueError(f"room {name!r} exists already; options apply to a new room only")
        return room

    def attach(self, room: Room) -> None:
        """Register ``room`` under its name (``Room(backplane=...)`` calls this)."""
        if room.name in self.rooms and self.rooms[room.name] is not room:
            raise ValueError(f"this backplane has a room called {room.name!r} already")
        self.rooms[room.name] = room
        self._attached(room)

    def publish(self, room: str, message: str | bytes) -> None:
        """Send ``message`` to the room ``room`` of the other processes; never waits."""
        raise NotImplementedError

    def _attached(self, room: Room) -> None:
        pass


class LocalBackplane(Rooms):
    """The embedded default: rooms in this process only, so ``publish()`` does nothing.

    It has the same ``room()``, ``run()`` and ``wait_connected()`` as ``RedisBackplane``, so the
    same code serves one process or a cluster.
    """

    #: Always True: there is nothing to connect to.
    connected = True

    def publish(self, room: str, message: str | bytes) -> None:
        """Nothing to do: there are no other processes."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Wait until cancelled (for code written for ``RedisBackplane.run()``)."""
        task_status.started()
        await trio.sleep_forever()

    async def wait_connected(self) -> None:
        """Return at once: there is nothing to connect to."""


def encode_batch(sender: bytes, entries: Iterable[tuple[int, str | bytes]]) -> bytes:
    """One backplane message from ``sender`` with the ``(sequence, message)`` pairs."""
    parts = [_HEAD.pack(VERSION, sender)]
    for seq, message in entries:
        if isinstance(message, str):
            kind, payload = _TEXT, message.encode("utf-8")
        else:
            kind, payload = _BINARY, message
        parts.append(_ENTRY.pack(seq, kind, len(payload)))
        parts.append(payload)
    return b"".join(parts)


def batch_sender(data: bytes) -> bytes:
    """The sender id of a backplane message (``b""`` if it is not one)."""
    if len(data) < _HEAD.size or data[0] != VERSION:
        return b""
    return data[1 : 1 + SENDER_SIZE]


def decode_batch(data: bytes) -> tuple[bytes, list[tuple[int, str | bytes]]]:
    """``(sender, [(sequence, message), ...])`` of a backplane message; ValueError if bad."""
    if len(data) < _HEAD.size:
        raise ValueError("backplane message too short")
    version, sender = _HEAD.unpack_from(data)
    if version != VERSION:
        raise ValueError(f"unknown backplane message version {version}")
    return sender, list(_entries(data, _HEAD.size))


def _entries(data: bytes, offset: int) -> Iterator[tuple[int, str | bytes]]:
    end = len(data)
    view = memoryview(data)
    while offset < end:
        if end - offset < _ENTRY.size:
            raise ValueError("truncated backplane entry")
        seq, kind, length = _ENTRY.unpack_from(data, offset)
        offset += _ENTRY.size
        if end - offset < length:
            raise ValueError("truncated backplane payload")
        payload = view[offset : offset + length]
        offset += length
        if kind == _TEXT:
            yield seq, str(payload, "utf-8")
        elif kind == _BINARY:
            yield seq, bytes(payload)
        else:
            raise ValueError(f"unknown backplane message kind {kind}")
