"""Masking and unmasking of payloads (RFC 6455 section 5.3), whole buffers at once."""

from __future__ import annotations

__all__ = ["apply_mask"]


def apply_mask(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated; the same call masks and unmasks.

    One big-integer XOR over the whole buffer: no Python loop per byte.
    """
    n = len(data)
    if n == 0:
        return b""
    key = (mask * ((n >> 2) + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")
