"""How a connection sends: ``send()`` of a message or of fragments, through the outbox.

Every frame goes through the connection's ``Outbox`` (``_outbox.py``), which never waits: it
says whether it wrote, queued or refused the frame, and ``send()`` waits only while the
outbox is full (``write_queue``).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any

import trio

from ..protocol._errors import ConnectionClosed
from ..protocol._frames import Opcode
from ._outbox import Offer, Outbox

__all__ = ["Fragments", "Sending"]


#: What ``send()`` takes to send one message in fragments.
Fragments = Iterable[str] | Iterable[bytes] | AsyncIterable[str] | AsyncIterable[bytes]


async def _aiter(fragments: Fragments) -> AsyncIterator[str | bytes]:
    if isinstance(fragments, AsyncIterable):
        async for fragment in fragments:
            yield fragment
    else:
        for fragment in fragments:
            yield fragment


class Sending:
    """The sending part of ``WebSocketConnection``: its first base class, not used alone.

    The connection's parts are a chain of classes, each with the state it owns in its
    ``__slots__``: ``Sending`` <- ``Receiving`` <- ``Pinging`` <- ``WebSocketConnection``.
    """

    __slots__ = ()

    # The connection's state this part uses (set by the connection).
    _outbox: Outbox

    if TYPE_CHECKING:  # what the connection does for this part

        def _closed_exception(self) -> ConnectionClosed: ...
        def _start_close(self, code: int, reason: str, *, discard_queued: bool = False) -> bool: ...

    async def send(
        self,
        message: str | bytes | bytearray | memoryview | Fragments,
        *,
        compress: bool = True,
    ) -> None:
        """Send one message: text for ``str``, binary for bytes-like.

        An iterable or async iterable of ``str`` (or of bytes-like) sends one message in
        fragments as they come, without building it whole (fragments are not compressed).
        Waits while ``write_queue`` frames wait to be written. Raises ``ConnectionClosed``
        once closing. ``compress=False`` sends this message uncompressed (e.g. data already
        compressed).
        """
        if not isinstance(message, (str, bytes)):
            await self._send_other(message, compress)
            return
        await self._offer(self._outbox.offer, message, compress)

    async def _offer(self, offer: Callable[..., Offer], *args: Any) -> None:
        """``offer(*args)``, waiting while the outbox is full; a checkpoint on every path."""
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while (result := offer(*args)) is Offer.FULL:
            waited = True
            await self._outbox.wait()
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        if result is Offer.CLOSED:
            raise self._closed_exception()

    async def _send_other(
        self, message: bytearray | memoryview | Fragments, compress: bool
    ) -> None:
        """``send()`` of a bytes-like or of fragments."""
        if isinstance(message, (bytearray, memoryview)):
            await self._offer(self._outbox.offer, bytes(message), compress)
        else:
            await self._send_fragments(message)

    async def _send_fragments(self, fragments: Fragments) -> None:
        """RFC 6455 section 5.4: the first frame typed, then continuations, the last with FIN.

        Whole messages sent meanwhile (by other tasks, or broadcasts) go after it; one
        fragmented message at a time."""
        outbox = self._outbox
        while not outbox.begin_fragments():
            await outbox.wait()  # another task is sending a fragmented message
        offer = outbox.offer_fragment
        opcode: Opcode | None = None
        try:
            async for fragment in _aiter(fragments):
                if isinstance(fragment, str):
                    kind, payload = Opcode.TEXT, fragment.encode("utf-8")
                else:
                    kind, payload = Opcode.BINARY, bytes(fragment)
                if opcode is None:
                    opcode = kind
                    await self._offer(offer, opcode, payload, False)
                elif kind is not opcode:
                    raise TypeError("the fragments of a message must all be str or all bytes")
                else:
                    await self._offer(offer, Opcode.CONTINUATION, payload, False)
            if opcode is None:
                raise TypeError("send() needs at least one fragment")
            await self._offer(offer, Opcode.CONTINUATION, b"", True)
        except BaseException:
            # A message left unfinished would be garbage to the peer: close instead.
            if opcode is not None:
                self._start_close(1011, "message not finished")
            raise
        finally:
            outbox.end_fragments()
