"""The connection's state machine (RFC 6455 sections 4 and 7).

Everything that affects the state lives here: the state, the one table of its transitions,
and the facts of the closing handshake (who sent a close frame first, with what code, and
whether the connection failed). ``Connection`` decides *when* an input happens; this module
alone decides what it does to the state.
"""

from __future__ import annotations

import enum
from typing import Final

from ._close import CloseCode
from ._errors import LocalProtocolError, ProtocolError

__all__ = ["TRANSITIONS", "ConnectionState", "Input", "Role", "StateMachine"]


class Role(enum.Enum):
    """Which end of the connection: a client masks its frames, a server requires masks
    (RFC 6455 section 5.3)."""

    CLIENT = "client"
    SERVER = "server"


class ConnectionState(enum.Enum):
    """The state of a connection, ``ws.state`` (RFC 6455 sections 4 and 7)."""

    #: Opening handshake in progress.
    CONNECTING = "CONNECTING"
    #: Handshake done; messages flow both ways.
    OPEN = "OPEN"
    #: We sent a close frame and wait for the peer's.
    CLOSING = "CLOSING"
    #: Both close frames exchanged, the connection failed, or the stream ended.
    CLOSED = "CLOSED"


class Input(enum.Enum):
    """What can happen to a connection."""

    REQUEST_ACCEPTED = "request accepted"  # server: accept() (section 4.2.2)
    REQUEST_REJECTED = "request rejected"  # server: reject(), an HTTP answer instead
    RESPONSE_ACCEPTED = "response accepted"  # client: a valid 101 (section 4.1)
    RESPONSE_REFUSED = "response refused"  # client: no or an invalid 101
    CLOSE_SENT = "close sent"  # we started the closing handshake (section 7.1.2)
    CLOSE_RECEIVED = "close received"  # the peer's close frame (section 7.1.5)
    FAILURE = "failure"  # we failed the connection (section 7.1.7)
    END_OF_STREAM = "end of stream"  # the TCP stream ended (section 7.1.5: 1006)


_S = ConnectionState
_I = Input

#: Every transition: (state, input) -> next state. An input missing here is refused.
TRANSITIONS: Final[dict[tuple[ConnectionState, Input], ConnectionState]] = {
    (_S.CONNECTING, _I.REQUEST_ACCEPTED): _S.OPEN,
    (_S.CONNECTING, _I.RESPONSE_ACCEPTED): _S.OPEN,
    (_S.CONNECTING, _I.REQUEST_REJECTED): _S.CLOSED,
    (_S.CONNECTING, _I.RESPONSE_REFUSED): _S.CLOSED,
    (_S.CONNECTING, _I.END_OF_STREAM): _S.CLOSED,
    (_S.OPEN, _I.CLOSE_SENT): _S.CLOSING,
    (_S.OPEN, _I.CLOSE_RECEIVED): _S.CLOSED,
    (_S.OPEN, _I.FAILURE): _S.CLOSED,
    (_S.OPEN, _I.END_OF_STREAM): _S.CLOSED,
    (_S.CLOSING, _I.CLOSE_RECEIVED): _S.CLOSED,
    (_S.CLOSING, _I.FAILURE): _S.CLOSED,
    (_S.CLOSING, _I.END_OF_STREAM): _S.CLOSED,
    (_S.CLOSED, _I.END_OF_STREAM): _S.CLOSED,
}


class StateMachine:
    """The state, and the closing handshake's facts, changed only through ``fire()`` and
    the methods below."""

    __slots__ = (
        "close_received",
        "close_sent",
        "closed_by_peer",
        "failure",
        "pending_failure",
        "sending_fragments",
        "state",
    )

    def __init__(self) -> None:
        self.state = ConnectionState.CONNECTING
        #: The peer's close code and reason, once its close frame arrived.
        self.close_received: tuple[int, str] | None = None
        #: Our close code and reason, once we sent (or queued) a close frame.
        self.close_sent: tuple[int, str] | None = None
        #: True if the peer started the closing handshake, False if we did.
        self.closed_by_peer: bool | None = None
        #: The violation we failed the connection with (section 7.1.7).
        self.failure: ProtocolError | None = None
        #: A violation found behind events not yet handed to the application.
        self.pending_failure: ProtocolError | None = None
        #: Between the first and the last frame of a message we send in fragments (5.4).
        self.sending_fragments = False

    def fire(self, event: Input) -> ConnectionState:
        """Apply ``event``; returns the state before it."""
        old = self.state
        new = TRANSITIONS.get((old, event))
        if new is None:
            raise LocalProtocolError(f"{event.value} is not possible in state {old.name}")
        self.state = new
        return old

    def send_close(self, code: int, reason: str) -> None:
        """We start the closing handshake."""
        self.fire(Input.CLOSE_SENT)
        self.close_sent = (int(code), reason)
        self.closed_by_peer = False

    def receive_close(self, code: int, reason: str) -> bool:
        """The peer's close frame; True if we must answer it (section 5.5.1)."""
        self.fire(Input.CLOSE_RECEIVED)
        self.close_received = (code, reason)
        if self.close_sent is not None:
            return False
        self.closed_by_peer = True
        self.close_sent = (code, "")
        return True

    def fail(self, error: ProtocolError, reason: str) -> bool:
        """We fail the connection; True if a close frame with ``error.code`` and ``reason``
        (the reason as sent) must still go out (section 7.1.7)."""
        self.fire(Input.FAILURE)
        self.failure = error
        self.pending_failure = None
        if self.close_sent is not None:
            return False
        self.close_sent = (error.code, reason)
        self.closed_by_peer = False
        return True

    @property
    def close_outcome(self) -> tuple[int, str]:
        """The peer's close code and reason, else the failure's, else 1006."""
        if self.close_received is not None:
            return self.close_received
        if self.failure is not None:
            return self.failure.code, self.failure.reason
        return CloseCode.ABNORMAL_CLOSURE.value, ""
