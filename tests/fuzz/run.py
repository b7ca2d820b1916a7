"""Coverage-guided fuzzing of trio_ws's parsers with atheris (libFuzzer).

    python tests/fuzz/run.py TARGET [libFuzzer options...]
    python tests/fuzz/run.py frames -max_total_time=60
    python tests/fuzz/run.py server_handshake -max_total_time=60 -dict=...

TARGET is one of the names in ``targets.TARGETS`` (frames, server_handshake,
client_handshake, server_connection, client_connection). ``nox -s fuzz`` runs each for a
while. A crash leaves a ``crash-*`` file with the input; replay it with
``python tests/fuzz/run.py TARGET crash-...``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["trio_ws", "h11", "targets"]):
    import targets


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in targets.TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(targets.TARGETS)}}} [libFuzzer options]")
    target = targets.TARGETS[sys.argv[1]]

    def test_one_input(data: bytes) -> None:
        target(data)

    atheris.Setup([sys.argv[0], *sys.argv[2:]], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
