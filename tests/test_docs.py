"""The documentation site: every public name is in the API reference."""

from __future__ import annotations

import re
from pathlib import Path

import trio_ws
import trio_ws.protocol
import trio_ws.testing

ROOT = Path(__file__).resolve().parent.parent


def test_every_public_name_is_in_the_api_reference() -> None:
    api = (ROOT / "docs" / "api.md").read_text()
    documented = set(re.findall(r"^::: (trio_ws(?:\.testing)?\.\w+)$", api, re.MULTILINE))
    public = {f"trio_ws.{name}" for name in trio_ws.__all__}
    public |= {f"trio_ws.testing.{name}" for name in trio_ws.testing.__all__}
    assert public - documented == set()
    assert documented - public == set()


def test_every_name_of_the_protocol_core_is_in_the_api_reference() -> None:
    api = (ROOT / "docs" / "api.md").read_text()
    documented = set(re.findall(r"^::: trio_ws(?:\.protocol)?\.(\w+)$", api, re.MULTILINE))
    assert set(trio_ws.protocol.__all__) - documented == set()


def test_the_reconnect_guide_is_in_the_navigation() -> None:
    assert "reconnect.md" in (ROOT / "mkdocs.yml").read_text()


def test_the_reconnects_guide_is_in_the_navigation_and_its_python_compiles() -> None:
    assert "reconnects.md" in (ROOT / "mkdocs.yml").read_text()
    page = (ROOT / "docs" / "reconnects.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.DOTALL)
    assert len(blocks) == 4
    for block in blocks:
        compile(block, "reconnects.md", "exec")
