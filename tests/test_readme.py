"""The README's quick start: exactly two commands, the second being what CI runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import trio
from helpers import first_line

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 20.0


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    return [block.strip() for block in blocks]


def test_the_quick_start_is_two_commands_in_a_virtual_environment() -> None:
    commands = quick_start_commands()
    assert len(commands) == 2
    for command in commands:
        assert "\n" not in command  # one command line each
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install ")
        assert "python3 -m pip" not in command  # nothing into the system's Python
    assert commands[0].endswith(".venv/bin/python examples/broadcast_server.py --port 8000")


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    match = re.search(r"^README_TEST_COMMAND='(.*)'$", ci, re.MULTILINE)
    assert match is not None
    assert match.group(1) == quick_start_commands()[1]
    assert "CMD[tests]=$README_TEST_COMMAND" in ci  # the tests session runs it as written
    assert 'bash -c "$cmd"' in ci


async def test_the_chat_example_says_which_url_to_open() -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, str(ROOT / "examples" / "broadcast_server.py"), "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        with trio.fail_after(TIMEOUT):
            line = await first_line(process, "the example")
            assert re.fullmatch(rb"chat on http://127\.0\.0\.1:\d+/\n", line), line
            process.terminate()
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        await process.stdout.aclose()
