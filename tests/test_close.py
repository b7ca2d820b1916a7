"""Close codes and the close frame's payload codec, trio_ws.protocol._close
(RFC 6455 sections 5.5.1 and 7.4)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_ws
from trio_ws.protocol import CloseCode, ProtocolError, encode_close_reason, is_valid_close_code
from trio_ws.protocol._close import (
    MAX_CLOSE_REASON,
    decode_close_payload,
    encode_close_payload,
)

valid_codes = st.one_of(st.integers(1000, 1003), st.integers(1007, 1014), st.integers(3000, 4999))


def test_close_codes_are_the_registered_ones() -> None:
    assert {code.value for code in CloseCode} == set(range(1000, 1016)) - {1004}
    assert CloseCode.INVALID_DATA == 1007
    assert CloseCode.MESSAGE_TOO_BIG == 1009
    assert trio_ws.CloseCode is CloseCode


def test_is_valid_close_code() -> None:
    valid = {c for c in range(65536) if is_valid_close_code(c)}
    assert valid == {1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)}


def test_codes_that_are_never_sent() -> None:
    never = {CloseCode.NO_STATUS_RCVD, CloseCode.ABNORMAL_CLOSURE, CloseCode.TLS_HANDSHAKE}
    assert {code for code in CloseCode if not is_valid_close_code(code)} == never


@pytest.mark.parametrize("code", [0, 999, 1004, 1006, 1015, 1016, 2999, 5000, 65535])
def test_invalid_close_codes(code: int) -> None:
    assert not is_valid_close_code(code)
    with pytest.raises(ValueError, match=str(code)):
        encode_close_payload(code)


@given(valid_codes, st.text(max_size=200))
@settings(deadline=None)
def test_payload_round_trip(code: int, reason: str) -> None:
    payload = encode_close_payload(code, reason)
    assert len(payload) <= 125  # section 5.5: a control frame's payload
    decoded_code, decoded_reason = decode_close_payload(payload)
    assert decoded_code == code
    assert decoded_reason == encode_close_reason(reason).decode("utf-8")


@given(st.text(max_size=200))
@settings(deadline=None)
def test_reason_cut_is_the_longest_prefix_of_whole_characters_that_fits(reason: str) -> None:
    cut = encode_close_reason(reason)
    assert len(cut) <= MAX_CLOSE_REASON
    whole = reason.encode("utf-8", "replace")
    assert whole.startswith(cut)
    text = cut.decode("utf-8")  # never a split character
    if len(cut) < len(whole):
        next_char = whole[len(cut) :].decode("utf-8")[0]
        assert len(cut) + len(next_char.encode("utf-8")) > MAX_CLOSE_REASON
    assert text == whole[: len(cut)].decode("utf-8")


def test_no_status_gives_an_empty_payload() -> None:
    assert encode_close_payload(CloseCode.NO_STATUS_RCVD, "dropped") == b""
    assert decode_close_payload(b"") == (1005, "")


def test_one_byte_payload_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_close_payload(b"\x03")
    assert info.value.code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("code", [0, 1005, 1006, 1015, 2999, 5000])
def test_received_invalid_code_is_a_protocol_error(code: int) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_close_payload(struct.pack("!H", code))
    assert info.value.code == 1002


def test_received_invalid_utf8_reason_is_invalid_data() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_close_payload(struct.pack("!H", 1000) + b"\xff")
    assert info.value.code == CloseCode.INVALID_DATA
    assert type(info.value.code) is int  # a plain int, also in messages
    assert "(close code 1007)" in str(info.value)
