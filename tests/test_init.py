"""trio_ws/__init__.py: the public names, those of the Trio layer imported when first used."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import trio_ws


def test_every_public_name_is_there_and_comes_from_where_the_map_says() -> None:
    for name in trio_ws.__all__:
        value = getattr(trio_ws, name)
        module = trio_ws._LAZY.get(name)
        if module is not None:
            assert value is getattr(importlib.import_module(module, "trio_ws"), name)
    assert set(trio_ws._LAZY) <= set(trio_ws.__all__)
    assert set(trio_ws.__all__) <= set(dir(trio_ws))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        trio_ws.no_such_name  # type: ignore[attr-defined]  # noqa: B018


def test_the_trio_layer_is_imported_on_first_use() -> None:
    code = (
        "import sys, trio_ws; assert 'trio' not in sys.modules; "
        "trio_ws.serve_websocket; assert 'trio' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
