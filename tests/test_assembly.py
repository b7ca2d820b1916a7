"""Message assembly, trio_ws.protocol._assembly (RFC 6455 section 5.4 and 8.1, RFC 7692):
the ``Assembler`` on its own, fed frame pieces as a ``FrameParser`` hands them out.

The same rules seen through a ``Connection`` (the close frame it then sends) are in
test_connection.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_ws.protocol import Message, MessageChunk, Metrics, ProtocolError
from trio_ws.protocol._assembly import Assembler
from trio_ws.protocol._extensions import MessageDecoder
from trio_ws.protocol._frames import RSV1, FrameParser, Opcode

TEXT, BINARY, CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION


def assembler(
    *,
    max_message_size: int | None = None,
    max_frame_size: int | None = None,
    stream_fragments: bool = False,
    metrics: Metrics | None = None,
) -> Assembler:
    parser = FrameParser(expect_masked=False, max_frame_size=None)
    return Assembler(
        parser,
        max_message_size=max_message_size,
        max_frame_size=max_frame_size,
        stream_fragments=stream_fragments,
        metrics=metrics,
    )


def refused(code: int, steps: list[tuple[Opcode, bool, int, bytes, bool]]) -> None:
    """The last of ``steps`` (opcode, fin, rsv, piece, done) fails with ``code``."""
    a = assembler()
    for step in steps[:-1]:
        a.receive(*step)
    with pytest.raises(ProtocolError) as info:
        a.receive(*steps[-1])
    assert info.value.code == code


def test_a_message_of_one_frame_in_one_piece() -> None:
    a = assembler()
    assert a.receive(TEXT, True, 0, "hé".encode(), True) == Message("hé")
    assert a.receive(BINARY, True, 0, b"\xff", True) == Message(b"\xff")


def test_frames_and_pieces_are_joined() -> None:
    a = assembler()
    assert a.receive(TEXT, False, 0, b"h", False) is None  # piece of a frame
    assert a.receive(TEXT, False, 0, b"\xc3", True) is None  # end of the first frame
    assert a.receive(CONT, True, 0, b"\xa9!", True) == Message("hé!")
    assert a.receive(BINARY, True, 0, b"", True) == Message(b"")  # the next one starts anew


def test_stream_fragments_hands_out_pieces_as_they_come() -> None:
    a = assembler(stream_fragments=True)
    assert a.receive(TEXT, False, 0, b"ab\xc3", True) == MessageChunk("ab", True, False)
    assert a.receive(CONT, False, 0, b"\xa9", True) == MessageChunk("é", False, False)
    assert a.receive(CONT, False, 0, b"", True) is None  # nothing new, not the end
    assert a.receive(CONT, True, 0, b"", True) == MessageChunk("", False, True)
    assert a.receive(BINARY, True, 0, b"x", True) == Message(b"x")  # one piece: a Message


@pytest.mark.parametrize("fin", [True, False])
def test_continuation_without_a_message(fin: bool) -> None:
    refused(1002, [(CONT, fin, 0, b"x", True)])


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_new_message_inside_a_fragmented_one(opcode: Opcode) -> None:
    refused(1002, [(TEXT, False, 0, b"a", True), (opcode, True, 0, b"b", True)])


def test_the_opcode_of_a_frame_arriving_in_pieces_is_checked_once() -> None:
    a = assembler()
    a.receive(TEXT, False, 0, b"a", True)
    assert a.receive(CONT, True, 0, b"b", False) is None
    assert a.receive(CONT, True, 0, b"c", True) == Message("abc")  # same frame, no recheck


def test_reserved_bits_without_an_extension() -> None:
    refused(1002, [(BINARY, True, RSV1, b"x", True)])


def test_reserved_bit_on_a_continuation() -> None:
    # RFC 7692 section 6.1: RSV1 marks a message's first frame only.
    refused(1002, [(BINARY, False, 0, b"a", True), (CONT, True, RSV1, b"b", True)])


@pytest.mark.parametrize("bad", [b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])
def test_invalid_utf8_in_one_frame(bad: bytes) -> None:
    refused(1007, [(TEXT, True, 0, b"ok" + bad, True)])


def test_invalid_utf8_is_refused_at_the_piece_that_has_it() -> None:
    refused(1007, [(TEXT, False, 0, b"ok", True), (CONT, False, 0, b"\xff", True)])


def test_a_surrogate_is_refused_before_the_message_ends() -> None:
    # ED A0 starts U+D800..: Python's decoder holds it back waiting for more; we do not.
    refused(1007, [(TEXT, False, 0, b"a\xed\xa0", True)])
    a = assembler()
    assert a.receive(TEXT, False, 0, b"a\xed\x9f", True) is None  # ED 9F: U+D7C0.., valid


def test_a_character_cut_at_the_end_of_the_message() -> None:
    refused(1007, [(TEXT, False, 0, b"a", True), (CONT, True, 0, b"\xe2\x82", True)])


def test_the_parsers_frame_limit_follows_the_message_size() -> None:
    a = assembler(max_message_size=10, max_frame_size=8)
    parser = a.parser
    assert parser.max_frame_size == 8
    a.receive(BINARY, False, 0, b"abcd", True)
    assert parser.max_frame_size == 6  # 10 - 4 left for the message
    a.receive(CONT, False, 0, b"", True)
    assert parser.max_frame_size == 6
    assert a.receive(CONT, True, 0, b"ef", True) == Message(b"abcdef")
    assert parser.max_frame_size == 8  # a new message


def test_no_limits() -> None:
    a = assembler()
    assert a.parser.max_frame_size is None
    a.receive(BINARY, False, 0, b"x" * 100, True)
    assert a.parser.max_frame_size is None


class Upper:
    """A per-message decoder: uppercases, and counts its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bool]] = []

    def decode(self, data: bytes, *, final: bool, max_size: int | None) -> bytes:
        self.calls.append((data, final))
        return data.upper()


class UpperExtension:
    name = "x-upper"
    rsv = RSV1

    def __init__(self) -> None:
        self.decoders: list[Upper] = []

    def decoder(self, rsv: int) -> MessageDecoder | None:
        if not rsv & RSV1:
            return None
        decoder = Upper()
        self.decoders.append(decoder)
        return decoder


def test_an_extension_decodes_the_messages_that_set_its_bit() -> None:
    metrics = Metrics()
    a = assembler(metrics=metrics)
    ext = UpperExtension()
    a.extensions = [ext]  # type: ignore[list-item]
    assert a.receive(TEXT, True, RSV1, b"abc", True) == Message("ABC")
    assert a.receive(TEXT, True, 0, b"abc", True) == Message("abc")  # not compressed
    assert a.receive(TEXT, False, RSV1, b"ab", True) is None
    assert a.receive(CONT, True, 0, b"c", True) == Message("ABC")
    assert ext.decoders[1].calls == [(b"ab", False), (b"c", True)]
    assert metrics.deflate_bytes_received == metrics.deflate_raw_bytes_received == 6
    assert metrics.messages_received == 3
    assert metrics.bytes_received == 9


# Any split of a valid message into frames, and of frames into pieces, gives the message.


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[tuple[bytes, bool]]:
    """``data`` as (piece, frame_done) pairs: cut into frames, each frame into pieces."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    frames = [data[i:j] for i, j in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    out: list[tuple[bytes, bool]] = []
    for frame in frames:
        inner = sorted(draw(st.lists(st.integers(0, len(frame)), max_size=3)))
        pieces = [frame[i:j] for i, j in zip([0, *inner], [*inner, len(frame)], strict=True)]
        out += [(piece, k == len(pieces) - 1) for k, piece in enumerate(pieces)]
    return out


def feed(a: Assembler, opcode: Opcode, split: list[tuple[bytes, bool]]) -> list[object]:
    events: list[object] = []
    first_frame, last = True, max(i for i, (_, done) in enumerate(split) if done)
    for i, (piece, done) in enumerate(split):
        event = a.receive(opcode if first_frame else CONT, i == last, 0, piece, done)
        if event is not None:
            events.append(event)
        if done:
            first_frame = False
    return events


@given(st.data(), st.text(max_size=40), st.booleans())
@settings(deadline=None)
def test_any_split_of_a_text_message_gives_the_message(
    data: st.DataObject, text: str, stream: bool
) -> None:
    split = data.draw(splits(text.encode("utf-8")))
    events = feed(assembler(stream_fragments=stream), TEXT, split)
    if not stream or len(split) == 1:
        assert events == [Message(text)]
    else:
        assert all(isinstance(e, MessageChunk) for e in events)
        chunks = [e for e in events if isinstance(e, MessageChunk)]
        assert "".join(str(c.data) for c in chunks) == text
        assert [c.first for c in chunks] == [True] + [False] * (len(chunks) - 1)
        assert [c.final for c in chunks] == [False] * (len(chunks) - 1) + [True]


@given(st.data(), st.binary(max_size=40))
@settings(deadline=None)
def test_any_split_of_a_binary_message_gives_the_message(
    data: st.DataObject, payload: bytes
) -> None:
    split = data.draw(splits(payload))
    assert feed(assembler(), BINARY, split) == [Message(payload)]
