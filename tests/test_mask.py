"""trio_ws.protocol._mask: masking, and the public flag saying whether the C extension is used."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import trio_ws
from trio_ws.protocol._mask import apply_mask, py_apply_mask


def test_masking_round_trips_in_both_implementations() -> None:
    data = bytes(range(256)) * 5 + b"tail"
    mask = b"\x01\x02\x03\x04"
    assert apply_mask(data, mask) == py_apply_mask(data, mask)
    assert py_apply_mask(py_apply_mask(data, mask), mask) == data


def test_speedups_enabled_matches_the_build() -> None:
    built = importlib.util.find_spec("trio_ws.protocol._speedups") is not None
    assert trio_ws.speedups_enabled() is built


def _flag_in_subprocess(prelude: str) -> str:
    code = f"{prelude}\nimport trio_ws\nprint(trio_ws.speedups_enabled())"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        check=True,
    )
    return result.stdout.strip()


def test_speedups_disabled_when_the_extension_cannot_be_imported() -> None:
    # None in sys.modules makes `import trio_ws.protocol._speedups` fail, as on a build without it.
    assert (
        _flag_in_subprocess("import sys; sys.modules['trio_ws.protocol._speedups'] = None")
        == "False"
    )
