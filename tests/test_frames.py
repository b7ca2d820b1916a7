"""Unit tests of the frame codec (RFC 6455 section 5): trio_ws.protocol._frames and _mask."""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_ws.protocol._errors import ProtocolError
from trio_ws.protocol._frames import (
    FIN,
    GROWTH,
    LARGE,
    MASK_BIT,
    PIECE,
    RSV1,
    RSV2,
    RSV3,
    FrameHeader,
    FrameParser,
    Opcode,
    apply_mask,
    encode_frame,
    encode_frame_pieces,
    join_frame,
    new_mask,
)
from trio_ws.protocol._mask import apply_mask as mask_module_apply_mask
from trio_ws.protocol._mask import py_apply_mask

try:
    from trio_ws.protocol._speedups import apply_mask as c_apply_mask
except ImportError:  # the optional C extension is not built
    c_apply_mask = None

# Every implementation of masking: the pure-Python one and, when built, the C one.
MASK_IMPLEMENTATIONS = [
    pytest.param(py_apply_mask, id="python"),
    pytest.param(
        c_apply_mask,
        id="c",
        marks=pytest.mark.skipif(c_apply_mask is None, reason="C extension not built"),
    ),
]
MaskFunction = Callable[[bytes | bytearray | memoryview, bytes], bytes]

HYPOTHESIS = settings(max_examples=200, deadline=None)

DATA_OPCODES = [Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY]
CONTROL_OPCODES = [Opcode.CLOSE, Opcode.PING, Opcode.PONG]
RESERVED_OPCODES = [*range(0x3, 0x8), *range(0xB, 0x10)]
MASK = b"\x37\xfa\x21\x3d"  # the masking key of the examples of RFC 6455 section 5.7


def naive_mask(data: bytes, mask: bytes) -> bytes:
    """Section 5.3, literally: octet i of the result is octet i XOR octet i MOD 4 of the key."""
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def parse_all(
    data: bytes,
    *,
    masked: bool,
    chunks: list[bytes] | None = None,
    max_frame_size: int | None = None,
    allowed_rsv: int = 0,
) -> list[tuple[FrameHeader, bytes]]:
    """Feed ``data`` (or ``chunks``) to a parser; the complete frames, payloads reassembled."""
    parser = FrameParser(expect_masked=masked, max_frame_size=max_frame_size)
    parser.allowed_rsv = allowed_rsv
    frames: list[tuple[FrameHeader, bytes]] = []
    pieces: list[bytes] = []
    for chunk in chunks if chunks is not None else [data]:
        parser.feed(chunk)
        while (item := parser.next()) is not None:
            header, piece, done = item
            assert isinstance(piece, bytes)
            pieces.append(piece)
            if done:
                frames.append((header, b"".join(pieces)))
                pieces = []
    assert pieces == [], "a frame was left incomplete"
    assert parser.buffered == 0
    return frames


def split_at(data: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted(points), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def raises_code(code: int, data: bytes, *, masked: bool, **kwargs: int | None) -> ProtocolError:
    parser = FrameParser(expect_masked=masked, max_frame_size=kwargs.get("max_frame_size"))
    parser.feed(data)
    with pytest.raises(ProtocolError) as info:
        while parser.next() is not None:
            pass
    assert info.value.code == code
    return info.value


# Opcodes ------------------------------------------------------------------------------------


def test_opcode_values() -> None:
    assert {op.name: int(op) for op in Opcode} == {
        "CONTINUATION": 0,
        "TEXT": 1,
        "BINARY": 2,
        "CLOSE": 8,
        "PING": 9,
        "PONG": 10,
    }
    assert [op for op in Opcode if op.is_control] == CONTROL_OPCODES


@pytest.mark.parametrize("opcode", list(Opcode))
@pytest.mark.parametrize("masked", [False, True])
def test_every_opcode_round_trips(opcode: Opcode, masked: bool) -> None:
    data = encode_frame(opcode, b"abc", mask=MASK if masked else None)
    assert data[0] == FIN | opcode
    [(header, payload)] = parse_all(data, masked=masked)
    assert header.opcode is opcode
    assert payload == b"abc"
    assert header.fin is True
    assert header.rsv == 0
    assert header.length == 3
    assert header.mask == (MASK if masked else None)


@pytest.mark.parametrize("opcode", RESERVED_OPCODES)
@pytest.mark.parametrize("masked", [False, True])
def test_reserved_opcode_refused(opcode: int, masked: bool) -> None:
    raises_code(1002, encode_frame(opcode, b"x", mask=MASK if masked else None), masked=masked)


@pytest.mark.parametrize("opcode", RESERVED_OPCODES)
def test_reserved_opcode_refused_from_first_two_bytes(opcode: int) -> None:
    # Fail fast: the first two bytes already tell, before the mask and payload.
    data = encode_frame(opcode, b"payload", mask=MASK)
    raises_code(1002, data[:2], masked=True)


# First byte: FIN and RSV --------------------------------------------------------------------


@pytest.mark.parametrize("fin", [True, False])
@pytest.mark.parametrize("rsv", [0, RSV1, RSV2, RSV3, RSV1 | RSV2 | RSV3])
@pytest.mark.parametrize("opcode", DATA_OPCODES)
def test_fin_and_rsv_bits(fin: bool, rsv: int, opcode: Opcode) -> None:
    data = encode_frame(opcode, b"hello", fin=fin, rsv=rsv)
    assert data[0] == (0x80 if fin else 0) | rsv | opcode
    assert data[1] == 5
    [(header, payload)] = parse_all(data, masked=False, allowed_rsv=RSV1 | RSV2 | RSV3)
    assert header.fin is fin
    assert header.rsv == rsv
    assert header.opcode is opcode
    assert payload == b"hello"


@pytest.mark.parametrize("rsv", [RSV1, RSV2, RSV3, RSV1 | RSV3])
def test_rsv_bits_without_extension_refused(rsv: int) -> None:
    raises_code(1002, encode_frame(Opcode.TEXT, b"x", rsv=rsv), masked=False)
    raises_code(1002, encode_frame(Opcode.TEXT, b"x", rsv=rsv, mask=MASK)[:2], masked=True)


def test_only_allowed_rsv_bits_accepted() -> None:
    parser = FrameParser(expect_masked=False, max_frame_size=None)
    parser.allowed_rsv = RSV1
    parser.feed(encode_frame(Opcode.TEXT, b"a", rsv=RSV1))
    item = parser.next()
    assert item is not None
    assert item[0].rsv == RSV1
    parser.feed(encode_frame(Opcode.TEXT, b"a", rsv=RSV1 | RSV2))
    with pytest.raises(ProtocolError) as info:
        parser.next()
    assert info.value.code == 1002


# Lengths ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "marker", "header_size"),
    [
        (0, 0, 2),
        (1, 1, 2),
        (125, 125, 2),
        (126, 126, 4),
        (127, 126, 4),
        (65535, 126, 4),
        (65536, 127, 10),
        (65537, 127, 10),
    ],
)
@pytest.mark.parametrize("masked", [False, True])
def test_length_encodings(length: int, marker: int, header_size: int, masked: bool) -> None:
    payload = bytes(i % 251 for i in range(length))
    data = encode_frame(Opcode.BINARY, payload, mask=MASK if masked else None)
    full_header = header_size + (4 if masked else 0)
    assert len(data) == full_header + length
    assert data[1] & 0x7F == marker
    assert bool(data[1] & MASK_BIT) is masked
    if marker == 126:
        assert struct.unpack("!H", data[2:4])[0] == length
    elif marker == 127:
        assert struct.unpack("!Q", data[2:10])[0] == length
    if masked:
        assert data[header_size:full_header] == MASK
        assert data[full_header:] == naive_mask(payload, MASK)
    else:
        assert data[full_header:] == payload
    [(header, parsed)] = parse_all(data, masked=masked)
    assert header.length == length
    assert parsed == payload


@pytest.mark.parametrize(
    ("frame", "opcode", "fin", "payload"),
    [
        # RFC 6455 section 5.7, verbatim.
        (b"\x81\x05\x48\x65\x6c\x6c\x6f", Opcode.TEXT, True, b"Hello"),
        (b"\x01\x03\x48\x65\x6c", Opcode.TEXT, False, b"Hel"),
        (b"\x80\x02\x6c\x6f", Opcode.CONTINUATION, True, b"lo"),
        (b"\x89\x05\x48\x65\x6c\x6c\x6f", Opcode.PING, True, b"Hello"),
        (b"\x82\x7e\x01\x00" + bytes(256), Opcode.BINARY, True, bytes(256)),
        (b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00" + bytes(65536), Opcode.BINARY, True, None),
    ],
)
def test_rfc_examples_unmasked(
    frame: bytes, opcode: Opcode, fin: bool, payload: bytes | None
) -> None:
    if payload is None:
        payload = bytes(65536)
    assert encode_frame(opcode, payload, fin=fin) == frame
    [(header, parsed)] = parse_all(frame, masked=False)
    assert (header.opcode, header.fin, parsed) == (opcode, fin, payload)


@pytest.mark.parametrize(
    ("frame", "opcode"),
    [
        (b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", Opcode.TEXT),
        (b"\x8a\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", Opcode.PONG),
    ],
)
def test_rfc_examples_masked(frame: bytes, opcode: Opcode) -> None:
    assert encode_frame(opcode, b"Hello", mask=MASK) == frame
    [(header, parsed)] = parse_all(frame, masked=True)
    assert (header.opcode, header.mask, parsed) == (opcode, MASK, b"Hello")


@pytest.mark.parametrize("length", [2**63, 2**63 + 1, 2**64 - 1])
@pytest.mark.parametrize("masked", [False, True])
def test_length_with_most_significant_bit_refused(length: int, masked: bool) -> None:
    data = struct.pack("!BBQ", FIN | Opcode.BINARY, 127 | (MASK_BIT if masked else 0), length)
    if masked:
        data += MASK
    raises_code(1002, data, masked=masked)


def test_largest_legal_length_header_accepted() -> None:
    parser = FrameParser(expect_masked=False, max_frame_size=None)
    parser.feed(struct.pack("!BBQ", FIN | Opcode.BINARY, 127, 2**63 - 1) + b"abc")
    header, piece, done = parser.next() or pytest.fail("no frame")
    assert header.length == 2**63 - 1
    assert (piece, done) == (b"abc", False)
    assert parser.next() is None


# Masking ------------------------------------------------------------------------------------


def test_apply_mask_is_the_same_function_in_both_modules() -> None:
    assert apply_mask is mask_module_apply_mask
    assert apply_mask in (py_apply_mask, c_apply_mask)


@pytest.mark.parametrize("impl", MASK_IMPLEMENTATIONS)
def test_apply_mask_rfc_example(impl: MaskFunction) -> None:
    assert impl(b"Hello", MASK) == b"\x7f\x9f\x4d\x51\x58"
    assert impl(b"\x7f\x9f\x4d\x51\x58", MASK) == b"Hello"


@pytest.mark.parametrize("impl", MASK_IMPLEMENTATIONS)
@pytest.mark.parametrize("length", [*range(0, 20), 63, 64, 65, 1000, 65537])
def test_apply_mask_lengths(impl: MaskFunction, length: int) -> None:
    data = bytes((i * 7 + 3) % 256 for i in range(length))
    masked = impl(data, MASK)
    assert type(masked) is bytes
    assert masked == naive_mask(data, MASK)
    assert impl(masked, MASK) == data


@pytest.mark.parametrize("impl", MASK_IMPLEMENTATIONS)
def test_apply_mask_keeps_leading_and_trailing_zero_bytes(impl: MaskFunction) -> None:
    # A big-integer implementation must not drop zero bytes at either end.
    data = b"\x00\x00abc\x00\x00"
    assert impl(data, b"\x00\x00\x00\x00") == data
    assert impl(b"\x37\xfa\x21\x3d\x37", MASK) == bytes(5)
    assert impl(bytes(9), b"\xff\x00\x00\xff") == naive_mask(bytes(9), b"\xff\x00\x00\xff")


@pytest.mark.parametrize("impl", MASK_IMPLEMENTATIONS)
def test_apply_mask_accepts_bytearray_and_memoryview(impl: MaskFunction) -> None:
    data = bytes(range(37))
    expected = naive_mask(data, MASK)
    assert impl(bytearray(data), MASK) == expected
    assert impl(memoryview(data), MASK) == expected
    # Slices at every offset: the C code must not assume aligned buffers.
    padded = b"\xaa" * 8 + data
    for offset in range(9):
        view = memoryview(padded)[offset : offset + len(data)]
        assert impl(view, MASK) == naive_mask(padded[offset : offset + len(data)], MASK)


@pytest.mark.parametrize("impl", MASK_IMPLEMENTATIONS)
@pytest.mark.parametrize("mask", [b"", b"abc", b"abcde"])
def test_apply_mask_refuses_wrong_key_length(impl: MaskFunction, mask: bytes) -> None:
    with pytest.raises(ValueError):
        impl(b"data", mask)


@pytest.mark.parametrize("impl", MASK_IMPLEMENTATIONS)
@HYPOTHESIS
@given(data=st.binary(max_size=2000), mask=st.binary(min_size=4, max_size=4))
def test_apply_mask_matches_reference(impl: MaskFunction, data: bytes, mask: bytes) -> None:
    masked = impl(data, mask)
    assert masked == naive_mask(data, mask)
    assert impl(masked, mask) == data


def test_new_mask_is_four_random_bytes() -> None:
    masks = {new_mask() for _ in range(50)}
    assert all(isinstance(m, bytes) and len(m) == 4 for m in masks)
    assert len(masks) > 45


def test_unmasked_frame_has_no_mask_bit_and_masked_frame_has_it() -> None:
    plain = encode_frame(Opcode.TEXT, b"abc")
    masked = encode_frame(Opcode.TEXT, b"abc", mask=MASK)
    assert plain == b"\x81\x03abc"
    assert masked == b"\x81\x83" + MASK + naive_mask(b"abc", MASK)


@pytest.mark.parametrize("payload", [b"", b"x"])
def test_client_frame_must_be_masked(payload: bytes) -> None:
    # A server (expect_masked=True) refuses an unmasked frame, and the other way round.
    err = raises_code(1002, encode_frame(Opcode.BINARY, payload), masked=True)
    assert "not masked" in err.reason
    raises_code(1002, encode_frame(Opcode.BINARY, payload, mask=MASK), masked=False)


# Control frames -----------------------------------------------------------------------------


@pytest.mark.parametrize("opcode", CONTROL_OPCODES)
def test_fragmented_control_frame_refused(opcode: Opcode) -> None:
    raises_code(1002, encode_frame(opcode, b"", fin=False), masked=False)
    raises_code(1002, encode_frame(opcode, b"ab", fin=False, mask=MASK)[:2], masked=True)


@pytest.mark.parametrize("opcode", CONTROL_OPCODES)
def test_control_frame_payload_limit(opcode: Opcode) -> None:
    [(_header, payload)] = parse_all(encode_frame(opcode, bytes(125)), masked=False)
    assert payload == bytes(125)
    raises_code(1002, encode_frame(opcode, bytes(126)), masked=False)
    raises_code(1002, encode_frame(opcode, bytes(65536)), masked=False)
    # Refused from the first two bytes (length marker 126) already.
    raises_code(1002, encode_frame(opcode, bytes(126))[:2], masked=False)


@pytest.mark.parametrize("opcode", CONTROL_OPCODES)
def test_control_frame_is_delivered_whole(opcode: Opcode) -> None:
    payload = bytes(range(100))
    data = encode_frame(opcode, payload, mask=MASK)
    parser = FrameParser(expect_masked=True, max_frame_size=None)
    for i in range(len(data) - 1):
        parser.feed(data[i : i + 1])
        assert parser.next() is None
    parser.feed(data[-1:])
    header, piece, done = parser.next() or pytest.fail("no frame")
    assert (header.opcode, piece, done) == (opcode, payload, True)
    assert parser.next() is None


def test_control_frames_ignore_max_frame_size() -> None:
    frames = parse_all(encode_frame(Opcode.PING, bytes(125)), masked=False, max_frame_size=10)
    assert frames[0][1] == bytes(125)


# max_frame_size -----------------------------------------------------------------------------


@pytest.mark.parametrize("opcode", DATA_OPCODES)
def test_max_frame_size(opcode: Opcode) -> None:
    [(_, payload)] = parse_all(encode_frame(opcode, bytes(1000)), masked=False, max_frame_size=1000)
    assert payload == bytes(1000)
    raises_code(1009, encode_frame(opcode, bytes(1001)), masked=False, max_frame_size=1000)


@pytest.mark.parametrize("length", [127, 70_000, 10 * 1024 * 1024])
def test_max_frame_size_refused_from_header_alone(length: int) -> None:
    header = encode_frame(Opcode.BINARY, b"")[:1]
    if length < 65536:
        header += struct.pack("!BH", 126 | MASK_BIT, length)
    else:
        header += struct.pack("!BQ", 127 | MASK_BIT, length)
    header += MASK
    raises_code(1009, header, masked=True, max_frame_size=126)


def test_max_frame_size_zero_accepts_only_empty_frames() -> None:
    assert parse_all(encode_frame(Opcode.TEXT, b""), masked=False, max_frame_size=0)[0][1] == b""
    raises_code(1009, encode_frame(Opcode.TEXT, b"x"), masked=False, max_frame_size=0)


# Incremental parsing ------------------------------------------------------------------------


def test_several_frames_in_one_feed() -> None:
    frames = [
        (Opcode.TEXT, b"Hel", False),
        (Opcode.PING, b"ping", True),
        (Opcode.CONTINUATION, b"lo", True),
        (Opcode.BINARY, b"", True),
        (Opcode.BINARY, bytes(300), True),
        (Opcode.CLOSE, b"\x03\xe8bye", True),
    ]
    data = b"".join(encode_frame(op, p, fin=fin, mask=MASK) for op, p, fin in frames)
    parsed = parse_all(data, masked=True)
    assert [(h.opcode, p, h.fin) for h, p in parsed] == frames


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.PING])
def test_one_frame_split_at_every_point(masked: bool, opcode: Opcode) -> None:
    payload = b"0123456789abcdefXYZ"
    data = encode_frame(opcode, payload, mask=MASK if masked else None)
    for i in range(len(data) + 1):
        [(header, parsed)] = parse_all(data, masked=masked, chunks=[data[:i], data[i:]])
        assert header.opcode is opcode
        assert parsed == payload


def test_one_frame_byte_by_byte_gives_payload_as_it_arrives() -> None:
    payload = bytes(range(40))
    data = encode_frame(Opcode.BINARY, payload, mask=MASK)
    parser = FrameParser(expect_masked=True, max_frame_size=None)
    header_size = 2 + 4
    pieces = []
    for i, byte in enumerate(data):
        parser.feed(bytes([byte]))
        item = parser.next()
        if i < header_size:
            assert item is None
            continue
        assert item is not None
        _header, piece, done = item
        # Each byte is unmasked with the right key byte, whatever its offset.
        assert piece == payload[i - header_size : i - header_size + 1]
        assert done is (i == len(data) - 1)
        pieces.append(piece)
        assert parser.next() is None
    assert b"".join(pieces) == payload


def test_stream_of_many_frames_in_odd_chunks() -> None:
    # Enough data to exercise the parser's buffer compaction.
    messages = [bytes([i]) * (1000 + 37 * i) for i in range(120)]
    data = b"".join(encode_frame(Opcode.BINARY, m, mask=MASK) for m in messages)
    chunks = [data[i : i + 7777] for i in range(0, len(data), 7777)]
    parsed = parse_all(data, masked=True, chunks=chunks)
    assert [p for _, p in parsed] == messages


def test_buffered_counts_bytes_not_handed_out() -> None:
    parser = FrameParser(expect_masked=False, max_frame_size=None)
    data = encode_frame(Opcode.PING, b"abcd")
    parser.feed(data[:4])
    assert parser.buffered == 4
    assert parser.next() is None
    assert parser.buffered == 2  # the header was consumed, two payload bytes wait
    parser.feed(data[4:])
    assert parser.next() is not None
    assert parser.buffered == 0


def test_empty_feed_is_harmless() -> None:
    parser = FrameParser(expect_masked=False, max_frame_size=None)
    parser.feed(b"")
    assert parser.next() is None
    parser.feed(encode_frame(Opcode.TEXT, b"ok"))
    parser.feed(b"")
    _header, piece, done = parser.next() or pytest.fail("no frame")
    assert (piece, done) == (b"ok", True)


# Properties ---------------------------------------------------------------------------------


@st.composite
def frames(draw: st.DrawFn) -> tuple[Opcode, bytes, bool, int, bytes | None]:
    opcode = draw(st.sampled_from(list(Opcode)))
    if opcode.is_control:
        payload = draw(st.binary(max_size=125))
        fin = True
    else:
        payload = draw(st.binary(max_size=70_000) | st.binary(max_size=300))
        fin = draw(st.booleans())
    # RSV bits are meaningful on data frames only (control frames with them are refused).
    rsv = (
        0 if opcode.is_control else draw(st.sampled_from([0, RSV1, RSV2, RSV3, RSV1 | RSV2 | RSV3]))
    )
    mask = draw(st.none() | st.binary(min_size=4, max_size=4))
    return opcode, payload, fin, rsv, mask


@HYPOTHESIS
@given(frame=frames(), data=st.data())
def test_serialize_then_parse_gives_the_frame(
    frame: tuple[Opcode, bytes, bool, int, bytes | None], data: st.DataObject
) -> None:
    opcode, payload, fin, rsv, mask = frame
    encoded = encode_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask)
    points = data.draw(st.lists(st.integers(0, len(encoded)), max_size=6))
    [(header, parsed)] = parse_all(
        encoded,
        masked=mask is not None,
        chunks=split_at(encoded, points),
        allowed_rsv=RSV1 | RSV2 | RSV3,
    )
    assert header == FrameHeader(fin, rsv, opcode, len(payload), mask)
    assert parsed == payload


@HYPOTHESIS
@given(frame=frames())
def test_serialize_then_parse_at_every_split_point(
    frame: tuple[Opcode, bytes, bool, int, bytes | None],
) -> None:
    opcode, payload, fin, rsv, mask = frame
    payload = payload[:40]
    encoded = encode_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask)
    for i in range(len(encoded) + 1):
        [(header, parsed)] = parse_all(
            encoded,
            masked=mask is not None,
            chunks=[encoded[:i], encoded[i:]],
            allowed_rsv=RSV1 | RSV2 | RSV3,
        )
        assert (header.opcode, header.fin, header.rsv, parsed) == (opcode, fin, rsv, payload)


@HYPOTHESIS
@given(
    data=st.binary(max_size=500),
    masked=st.booleans(),
    max_frame_size=st.none() | st.integers(0, 200),
    allowed_rsv=st.sampled_from([0, RSV1]),
    cuts=st.lists(st.integers(0, 500), max_size=5),
)
def test_arbitrary_bytes_raise_only_protocol_error(
    data: bytes, masked: bool, max_frame_size: int | None, allowed_rsv: int, cuts: list[int]
) -> None:
    parser = FrameParser(expect_masked=masked, max_frame_size=max_frame_size)
    parser.allowed_rsv = allowed_rsv
    try:
        for chunk in split_at(data, [c for c in cuts if c <= len(data)]):
            parser.feed(chunk)
            while (item := parser.next()) is not None:
                header, piece, done = item
                assert len(piece) <= header.length
                if header.opcode.is_control:
                    assert done
                    assert len(piece) == header.length <= 125
                elif max_frame_size is not None:
                    assert header.length <= max_frame_size
    except ProtocolError as exc:
        assert exc.code in (1002, 1009)


@pytest.mark.parametrize("mask", [None, MASK])
@pytest.mark.parametrize("length", [LARGE - 1, LARGE, LARGE + 5])
def test_large_payloads_come_apart_from_their_header(mask: bytes | None, length: int) -> None:
    payload = bytes(range(256)) * (length // 256) + b"t" * (length % 256)
    frame = encode_frame_pieces(Opcode.BINARY, payload, mask=mask)
    whole = encode_frame(Opcode.BINARY, payload, mask=mask)
    if length < LARGE:
        assert frame == whole
    else:
        assert isinstance(frame, tuple)
        header, body = frame
        assert len(header) == 10 + (4 if mask else 0)
        assert body is payload or mask is not None  # unmasked: the payload itself
        assert join_frame(frame) == whole
    [(_header, parsed)] = parse_all(whole, masked=mask is not None)
    assert parsed == payload


# Large payloads: a buffer of their own, which reads may fill directly ------------------------


def read_into(parser: FrameParser, data: bytes) -> None:
    """What one socket read of ``data`` does: into ``get_buffer()`` if the parser has one
    (the rest of ``data`` is the next read), else ``feed()``."""
    while data:
        view = parser.get_buffer()
        if view is None:
            parser.feed(data)
            return
        with view:
            size = min(len(view), len(data))
            view[:size] = data[:size]
        parser.buffer_updated(size)
        data = data[size:]


def large_payload(length: int) -> bytes:
    return (bytes(range(251)) * (length // 251 + 1))[:length]


@pytest.mark.parametrize("use_buffer", [False, True])
@pytest.mark.parametrize("length", [LARGE, LARGE + 3, PIECE])
def test_a_large_frame_comes_whole_however_it_arrives(use_buffer: bool, length: int) -> None:
    """Up to PIECE bytes without RSV bits, of which a GROWTH-th came first: one piece (no
    joining for a one-frame message), whatever the reads after, split at odd offsets; the
    frame behind it in the same read too."""
    payload = large_payload(length)
    data = encode_frame(Opcode.BINARY, payload, mask=MASK) + encode_frame(
        Opcode.PING, b"p", mask=MASK
    )
    parser = FrameParser(expect_masked=True, max_frame_size=None)
    got = []
    first = 14 + length // GROWTH + 1
    for chunk in split_at(data, [1, 5, 7, 13, first, first + 40_001, length - 17, length + 15]):
        if use_buffer:
            read_into(parser, chunk)
        else:
            parser.feed(chunk)
        while (item := parser.next()) is not None:
            got.append(item)
    assert [(h.opcode, piece, done) for h, piece, done in got] == [
        (Opcode.BINARY, payload, True),
        (Opcode.PING, b"p", True),
    ]
    assert parser.buffered == 0
    assert parser.get_buffer() is None


@pytest.mark.parametrize("use_buffer", [False, True])
def test_a_frame_over_a_piece_comes_as_it_arrives(use_buffer: bool) -> None:
    """Over PIECE bytes (or compressed): pieces as they arrive, unmasked at odd offsets."""
    payload = large_payload(PIECE + 9)
    data = encode_frame(Opcode.BINARY, payload, mask=MASK)
    parser = FrameParser(expect_masked=True, max_frame_size=None)
    pieces = []
    for chunk in split_at(data, [3, 14, 100_003, 500_001, PIECE + 1, PIECE + 12]):
        if use_buffer:
            read_into(parser, chunk)
        else:
            parser.feed(chunk)
        while (item := parser.next()) is not None:
            _header, piece, done = item
            pieces.append(piece)
    assert len(pieces) > 3
    assert b"".join(pieces) == payload
    assert done


def test_a_compressed_large_frame_comes_as_it_arrives() -> None:
    """Its pieces go to the inflater at once, which refuses a bomb early."""
    payload = large_payload(LARGE * 2)
    data = encode_frame(Opcode.BINARY, payload, rsv=RSV1, mask=MASK)
    parser = FrameParser(expect_masked=True, max_frame_size=None)
    parser.allowed_rsv = RSV1
    read_into(parser, data[:1001])
    _header, piece, done = parser.next() or pytest.fail("nothing handed out")
    assert (piece, done) == (payload[: 1001 - 14], False)


@pytest.mark.parametrize("length", [PIECE, 2**63 - 1])
def test_a_large_frame_buffer_is_never_sized_by_the_claimed_length_alone(length: int) -> None:
    """Only by the bytes that came (a peer cannot make us hold much more than it sent):
    a payload that starts with a trickle comes as it arrives, in small buffers."""
    parser = FrameParser(expect_masked=False, max_frame_size=None)
    assert parser.get_buffer() is None  # no frame yet
    parser.feed(struct.pack("!BBQ", FIN | Opcode.BINARY, 127, length))
    assert parser.next() is None
    assert parser.get_buffer() is None  # nothing of the payload yet: no buffer
    parser.feed(b"abc")
    assert parser.next() is not None  # b"abc", as it arrives
    view = parser.get_buffer() or pytest.fail("no buffer")
    assert len(view) == GROWTH * 3 - 3
    view.release()
    # Over the limit: refused from the header, before any buffer.
    limited = FrameParser(expect_masked=False, max_frame_size=PIECE)
    limited.feed(struct.pack("!BBQ", FIN | Opcode.BINARY, 127, 2**62))
    with pytest.raises(ProtocolError) as info:
        limited.next()
    assert info.value.code == 1009
    assert limited.get_buffer() is None
