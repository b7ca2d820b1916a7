"""Close codes and the close frame's payload (RFC 6455 sections 5.5.1 and 7.4)."""

from __future__ import annotations

import enum
import struct
from typing import Final

from ._errors import ProtocolError

__all__ = [
    "MAX_CLOSE_REASON",
    "CloseCode",
    "decode_close_payload",
    "encode_close_payload",
    "encode_close_reason",
    "is_valid_close_code",
]


class CloseCode(enum.IntEnum):
    """The registered close codes (RFC 6455 section 7.4.1 and the IANA registry).

    Members are ``int``: ``CloseCode.GOING_AWAY == 1001``. Applications may also use
    3000-4999 (section 7.4.2).
    """

    #: 1000: the purpose of the connection was fulfilled.
    NORMAL_CLOSURE = 1000
    #: 1001: the endpoint goes away (server shutting down, browser leaving the page).
    GOING_AWAY = 1001
    #: 1002: the peer broke the protocol.
    PROTOCOL_ERROR = 1002
    #: 1003: a type of data the endpoint cannot accept (e.g. binary for a text-only one).
    UNSUPPORTED_DATA = 1003
    #: 1005: never sent; reported when a close frame carried no code.
    NO_STATUS_RCVD = 1005
    #: 1006: never sent; reported when the connection ended without a close frame.
    ABNORMAL_CLOSURE = 1006
    #: 1007: data inconsistent with its type (invalid UTF-8 in a text message).
    INVALID_DATA = 1007
    #: 1008: a message violates the endpoint's policy.
    POLICY_VIOLATION = 1008
    #: 1009: a message too big to process.
    MESSAGE_TOO_BIG = 1009
    #: 1010: the client needed an extension the server did not negotiate.
    MANDATORY_EXTENSION = 1010
    #: 1011: the server met an unexpected condition.
    INTERNAL_ERROR = 1011
    #: 1012: the server is restarting (IANA registry).
    SERVICE_RESTART = 1012
    #: 1013: try again later, e.g. overloaded (IANA registry).
    TRY_AGAIN_LATER = 1013
    #: 1014: a gateway or proxy got an invalid response upstream (IANA registry).
    BAD_GATEWAY = 1014
    #: 1015: never sent; reported when the TLS handshake failed.
    TLS_HANDSHAKE = 1015


def is_valid_close_code(code: int) -> bool:
    """Codes allowed in a close frame on the wire (section 7.4 and the IANA registry):
    the registered ones except 1005, 1006 and 1015, and 3000-4999."""
    return (
        CloseCode.NORMAL_CLOSURE <= code <= CloseCode.UNSUPPORTED_DATA
        or CloseCode.INVALID_DATA <= code <= CloseCode.BAD_GATEWAY
        or 3000 <= code <= 4999  # section 7.4.2: libraries, frameworks and applications
    )


_CODE = struct.Struct("!H")

#: Section 5.5: a control frame carries at most 125 bytes, 2 of them a close frame's code.
MAX_CLOSE_REASON: Final = 123


def encode_close_reason(reason: str) -> bytes:
    """A close reason as sent: UTF-8, cut to 123 bytes on a character boundary.

    Section 5.5.1: the reason is UTF-8, and a peer fails the connection with 1007 on a
    character split by the cut, so a longer reason loses its last whole characters instead
    (as wsproto does). Lone surrogates, which UTF-8 cannot encode, are sent as ``?``.
    """
    data = reason.encode("utf-8", "replace")
    if len(data) <= MAX_CLOSE_REASON:
        return data
    cut = MAX_CLOSE_REASON
    while data[cut] & 0xC0 == 0x80:  # a continuation byte: the cut would split a character
        cut -= 1
    return data[:cut]


def encode_close_payload(code: int, reason: str = "") -> bytes:
    """A close frame's payload (section 5.5.1): the 2-byte code, then the reason as
    ``encode_close_reason()`` cuts it. ``NO_STATUS_RCVD`` (1005) gives an empty payload (and
    drops the reason); another code that may not be sent raises ``ValueError``."""
    if code == CloseCode.NO_STATUS_RCVD:
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent")
    return _CODE.pack(code) + encode_close_reason(reason)


def decode_close_payload(payload: bytes) -> tuple[int, str]:
    """The code and reason of a received close frame's payload (section 5.5.1).

    An empty payload gives ``(1005, "")``. A 1-byte payload or a code that may not be sent
    raises ``ProtocolError(1002)``; a reason that is not UTF-8, ``ProtocolError(1007)``.
    """
    if not payload:
        return CloseCode.NO_STATUS_RCVD.value, ""
    if len(payload) == 1:
        raise ProtocolError(CloseCode.PROTOCOL_ERROR, "close frame with a 1-byte payload")
    (code,) = _CODE.unpack_from(payload)
    if not is_valid_close_code(code):
        raise ProtocolError(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        return code, payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(CloseCode.INVALID_DATA, "invalid UTF-8 in the close reason") from None
