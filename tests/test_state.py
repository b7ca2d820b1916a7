"""The state machine of trio_ws.protocol._state: its one table of transitions and the facts
of the closing handshake (RFC 6455 sections 4 and 7)."""

from __future__ import annotations

import itertools

import pytest

from trio_ws.protocol import ConnectionState, LocalProtocolError, ProtocolError
from trio_ws.protocol._state import TRANSITIONS, Input, StateMachine

CONNECTING, OPEN, CLOSING, CLOSED = (
    ConnectionState.CONNECTING,
    ConnectionState.OPEN,
    ConnectionState.CLOSING,
    ConnectionState.CLOSED,
)


def machine_in(state: ConnectionState) -> StateMachine:
    machine = StateMachine()
    machine.state = state
    return machine


@pytest.mark.parametrize(("state", "event"), list(itertools.product(ConnectionState, Input)))
def test_every_input_in_every_state_follows_the_table(state: ConnectionState, event: Input) -> None:
    machine = machine_in(state)
    new = TRANSITIONS.get((state, event))
    if new is None:
        with pytest.raises(LocalProtocolError, match=state.name):
            machine.fire(event)
        assert machine.state is state  # a refused input changes nothing
    else:
        assert machine.fire(event) is state
        assert machine.state is new


def test_closed_is_final_and_only_the_end_of_the_stream_may_come_again() -> None:
    assert [event for (state, event) in TRANSITIONS if state is CLOSED] == [Input.END_OF_STREAM]
    assert all(new is CLOSED for (state, _), new in TRANSITIONS.items() if state is CLOSED)


def test_only_the_handshake_opens_and_only_our_close_frame_leads_to_closing() -> None:
    opening = {event for (state, event), new in TRANSITIONS.items() if new is OPEN}
    assert opening == {Input.REQUEST_ACCEPTED, Input.RESPONSE_ACCEPTED}
    closing = {event for (state, event), new in TRANSITIONS.items() if new is CLOSING}
    assert closing == {Input.CLOSE_SENT}


def test_a_new_machine_is_connecting_with_no_close_facts() -> None:
    machine = StateMachine()
    assert machine.state is CONNECTING
    assert machine.close_sent is machine.close_received is machine.closed_by_peer is None
    assert machine.failure is machine.pending_failure is None
    assert not machine.sending_fragments
    assert machine.close_outcome == (1006, "")


def test_we_close_first_then_the_peer_answers() -> None:
    machine = machine_in(OPEN)
    machine.send_close(1000, "bye")
    assert (machine.state, machine.close_sent, machine.closed_by_peer) == (
        CLOSING,
        (1000, "bye"),
        False,
    )
    assert machine.receive_close(1000, "") is False  # nothing to answer: ours went first
    assert machine.state is CLOSED
    assert machine.close_outcome == (1000, "")
    assert machine.closed_by_peer is False


def test_the_peer_closes_first_and_we_must_echo_its_code() -> None:
    machine = machine_in(OPEN)
    assert machine.receive_close(4000, "app") is True
    assert machine.state is CLOSED
    assert machine.close_sent == (4000, "")  # section 5.5.1: the echo carries the code
    assert machine.closed_by_peer is True
    assert machine.close_outcome == (4000, "app")


def test_send_close_stores_a_plain_int() -> None:
    from trio_ws.protocol import CloseCode

    machine = machine_in(OPEN)
    machine.send_close(CloseCode.GOING_AWAY, "")
    assert machine.close_sent is not None and type(machine.close_sent[0]) is int


@pytest.mark.parametrize("state", [OPEN, CLOSING])
def test_failure(state: ConnectionState) -> None:
    machine = machine_in(state)
    if state is CLOSING:
        machine.close_sent, machine.closed_by_peer = (1000, ""), False
    error = ProtocolError(1002, "bad frame")
    machine.pending_failure = error
    must_send = machine.fail(error, "bad frame")
    assert must_send is (state is OPEN)  # our close frame went already when closing
    assert machine.state is CLOSED
    assert machine.failure is error and machine.pending_failure is None
    assert machine.closed_by_peer is False
    assert machine.close_outcome == (1002, "bad frame")
    assert machine.close_sent == ((1002, "bad frame") if state is OPEN else (1000, ""))


def test_failure_after_the_close_is_refused() -> None:
    machine = machine_in(CLOSED)
    with pytest.raises(LocalProtocolError):
        machine.fail(ProtocolError(1002, "late"), "late")
    assert machine.failure is None


def test_close_outcome_prefers_the_peers_close_frame_to_our_failure() -> None:
    machine = machine_in(CLOSED)
    machine.failure = ProtocolError(1007, "bad text")
    machine.close_received = (1001, "gone")
    assert machine.close_outcome == (1001, "gone")
