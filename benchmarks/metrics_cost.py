"""What counting costs in the protocol core: ns per 32 B message sent and received, with a
``Metrics`` and without (``metrics=None``), best of 7 runs of 200k.

    python benchmarks/metrics_cost.py

The core is where the two additions per message happen (``Connection.send_message`` and
``receive_data``); a whole ``ws.send()`` over loopback costs ~10 µs here, so the difference is
below that benchmark's noise.
"""

from __future__ import annotations

import timeit

import trio_ws
from trio_ws.protocol import Connection, Role
from trio_ws.protocol._frames import Opcode, encode_frame
from trio_ws.protocol._handshake import ClientHandshake

N = 200_000
MESSAGE = b"x" * 32


def measure(metrics: trio_ws.Metrics | None) -> tuple[float, float]:
    core = Connection(Role.SERVER, metrics=metrics)
    core.receive_data(ClientHandshake("localhost", "/").request_bytes())
    core.accept()
    frames = encode_frame(Opcode.BINARY, MESSAGE, mask=b"abcd") * 100
    core.data_to_send()

    def send_one() -> None:
        core.send_message(MESSAGE)
        core.data_to_send()

    send = min(timeit.repeat(send_one, number=N, repeat=7))
    receive = min(timeit.repeat(lambda: core.receive_data(frames), number=N // 100, repeat=7))
    return send / N * 1e9, receive / N * 1e9


def main() -> None:
    best: dict[str, tuple[float, float]] = {}
    for _ in range(3):  # interleaved, so that a busy moment of the machine hits both alike
        for label, metrics in (("metrics=None", None), ("Metrics()", trio_ws.Metrics())):
            send, receive = measure(metrics)
            old = best.get(label, (send, receive))
            best[label] = (min(send, old[0]), min(receive, old[1]))
    for label, (send, receive) in best.items():
        print(f"{label:13} send_message {send:5.0f} ns/msg   receive_data {receive:5.0f} ns/msg")


if __name__ == "__main__":
    main()
