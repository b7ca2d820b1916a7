"""The limits and timeouts of a connection (``WebSocketOptions``)."""

from __future__ import annotations

import attrs

from ..protocol._deflate import PerMessageDeflate

__all__ = ["WebSocketOptions"]


@attrs.frozen
class WebSocketOptions:
    """Limits and timeouts of a connection; the same on server and client."""

    #: Largest message accepted, in bytes (after decompression); larger ones close with 1009.
    max_message_size: int | None = 1024 * 1024
    #: Largest single frame accepted; ``None`` means only the message limit applies.
    max_frame_size: int | None = None
    #: Received messages held for the application before the reader stops reading.
    max_queue: int = 16
    #: Outgoing frames queued for the writer before ``send()`` waits.
    write_queue: int = 16
    #: Seconds to wait for the closing handshake before closing the TCP connection.
    close_timeout: float = 10.0
    #: Largest HTTP request or response head (request line and headers), in bytes.
    max_head_size: int = 16 * 1024
    #: Seconds between keepalive pings; ``None`` turns keepalive off.
    ping_interval: float | None = 20.0
    #: Seconds to wait for a keepalive pong before closing with 1011.
    ping_timeout: float | None = 20.0
    #: permessage-deflate settings (RFC 7692), offered or accepted; ``None`` turns it off.
    compression: PerMessageDeflate | None = attrs.field(factory=PerMessageDeflate)
