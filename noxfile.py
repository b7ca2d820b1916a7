"""Developer and CI tasks for trio_ws.

nox                      # tests, lint, types (the defaults)
nox -s tests -- -k close # extra arguments go to pytest
nox -s autobahn          # Autobahn|Testsuite cases 1.* to 10.* against examples/echo_server.py
nox -s autobahn -- --cases '12.*,13.*'
nox -s autobahn_deflate  # cases 12.* and 13.* (permessage-deflate; slow)
nox -s autobahn_asyncio  # 1.* to 10.* against examples/asyncio_echo_server.py (trio_ws.protocol)
nox -s autobahn_asyncio_deflate  # the same server with --deflate, cases 12.* and 13.* (slow)
nox -s autobahn_client   # the trio_ws client against Autobahn's fuzzing server, 1.* to 10.*
nox -s autobahn_client_deflate  # the client, cases 12.* and 13.* (slow)
nox -s coverage          # tests under coverage (subprocesses too), then the report
nox -s tests_all_pythons # tests on 3.10, 3.11, 3.12 and 3.13 (tests_all_pythons-3.12 etc.)
nox -s bench_resume      # reconnect storm: 1000 clients resume 100 missed messages (Redis rows too)
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "types"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).resolve().parent
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
AUTOBAHN_DEFAULT_CASES = "1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*"  # run.py's default too

# pyenv's shims only resolve `python3.X` for the versions selected with `pyenv global`; make
# every installed pyenv CPython 3.x findable so the tests_all_pythons sessions can run. Appended,
# so whatever is on PATH already keeps precedence.
_pyenv_roots = dict.fromkeys(
    os.path.expanduser(root) for root in (os.environ.get("PYENV_ROOT"), "~/.pyenv") if root
)
_pyenv_bins = [
    path
    for root in _pyenv_roots
    for path in sorted(glob.glob(os.path.join(root, "versions", "3.*", "bin")))
    if path not in os.environ.get("PATH", "").split(os.pathsep)
]
if _pyenv_bins:
    os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", ""), *_pyenv_bins])


def _install_dev(session: nox.Session) -> None:
    # compat: a .pth path entry that mypy follows (the default editable mode's import hook
    # is invisible to it); see the README's Development section.
    session.install("-e", ".[dev]", "--config-settings", "editable_mode=compat")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite with the interpreter that runs nox."""
    _install_dev(session)
    session.run("pytest", *session.posargs)


@nox.session
def coverage(session: nox.Session) -> None:
    """Run the test suite under coverage.py, branch coverage of trio_ws, subprocesses included
    ([tool.coverage.run] in pyproject.toml); combine the data and print the report, whose last
    line is the total. Data in build/coverage/ (``coverage html --data-file
    build/coverage/.coverage`` for pages). Extra arguments go to pytest."""
    _install_dev(session)
    data = ROOT / "build" / "coverage"
    data.mkdir(parents=True, exist_ok=True)
    # An absolute path, inherited by every measured subprocess, whatever its working directory.
    session.env["COVERAGE_FILE"] = str(data / ".coverage")
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", "-p", "no:cacheprovider", *session.posargs)
    session.run("coverage", "combine", "--quiet")
    session.run("coverage", "report")


@nox.session(python=PYTHONS)
def tests_all_pythons(session: nox.Session) -> None:
    """Run the test suite on every supported Python (tests_all_pythons-3.10, ...)."""
    _install_dev(session)
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check (no changes made; `ruff format .` fixes formatting), and the
    layering contracts of pyproject.toml's [tool.importlinter] (import-linter)."""
    _install_dev(session)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports", "--no-logo")


@nox.session
def types(session: nox.Session) -> None:
    """mypy --strict on the library (and on the examples, if there are any)."""
    _install_dev(session)
    session.run("mypy", "--strict", "trio_ws")
    if (ROOT / "examples").is_dir() and any((ROOT / "examples").glob("*.py")):
        session.run("mypy", "--strict", "examples")


def _autobahn(session: nox.Session, script: str, *default_args: str) -> None:
    _install_dev(session)
    session.run("bash", str(ROOT / "tools" / "autobahn" / "install.sh"), external=True)
    # run.py and client.py parse later flags over earlier ones, so posargs override defaults.
    session.run(
        "python", str(ROOT / "tools" / "autobahn" / script), *default_args, *session.posargs
    )


@nox.session
def autobahn(session: nox.Session) -> None:
    """Autobahn|Testsuite fuzzing client against examples/echo_server.py, cases 1.* to 10.*."""
    _autobahn(session, "run.py", "--cases", AUTOBAHN_DEFAULT_CASES)


@nox.session
def autobahn_deflate(session: nox.Session) -> None:
    """Autobahn|Testsuite permessage-deflate cases (12.*, 13.*); takes 10+ minutes."""
    _autobahn(
        session,
        "run.py",
        "--cases",
        "12.*,13.*",
        "--outdir",
        "build/autobahn-deflate",
        "--timeout",
        "5400",
    )


# The asyncio server built only on the sans-I/O core: the proof that trio_ws.protocol is enough
# to drive the protocol from another framework. run.py fails on any verdict but OK and
# INFORMATIONAL (NON-STRICT included).
ASYNCIO_SERVER = "{python} examples/asyncio_echo_server.py"


@nox.session
def autobahn_asyncio(session: nox.Session) -> None:
    """Autobahn|Testsuite fuzzing client against examples/asyncio_echo_server.py (asyncio on
    trio_ws.protocol), cases 1.* to 10.*."""
    _autobahn(
        session,
        "run.py",
        "--cases",
        AUTOBAHN_DEFAULT_CASES,
        "--server-cmd",
        ASYNCIO_SERVER,
        "--outdir",
        "build/autobahn-asyncio",
        "--agent",
        "trio_ws.protocol+asyncio",
        "--timeout",
        "1200",
    )


@nox.session
def autobahn_asyncio_deflate(session: nox.Session) -> None:
    """The asyncio server with --deflate, permessage-deflate cases (12.*, 13.*); 10+ minutes."""
    _autobahn(
        session,
        "run.py",
        "--cases",
        "12.*,13.*",
        "--server-cmd",
        ASYNCIO_SERVER + " --deflate",
        "--outdir",
        "build/autobahn-asyncio-deflate",
        "--agent",
        "trio_ws.protocol+asyncio",
        "--timeout",
        "5400",
    )


@nox.session
def autobahn_client(session: nox.Session) -> None:
    """The trio_ws client against Autobahn|Testsuite's fuzzing server, cases 1.* to 10.*."""
    _autobahn(session, "client.py", "--cases", AUTOBAHN_DEFAULT_CASES, "--timeout", "1200")


@nox.session
def autobahn_client_deflate(session: nox.Session) -> None:
    """The trio_ws client against the fuzzing server, permessage-deflate cases (12.*, 13.*);
    takes 10+ minutes."""
    _autobahn(
        session,
        "client.py",
        "--cases",
        "12.*,13.*",
        "--outdir",
        "build/autobahn-client-deflate",
        "--timeout",
        "5400",
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against websockets (asyncio and Trio), trio-websocket, aiohttp and a raw Trio
    ceiling: `nox -s bench` (under 10 minutes), `nox -s bench -- --quick` (under 2 minutes).
    Prints a markdown table, writes benchmarks/results/latest.json (`-- --json PATH`)."""
    session.install("-e", ".")
    session.install("websockets>=17", "trio-websocket")
    try:
        session.install("aiohttp")  # optional row
    except nox.command.CommandFailed:
        session.warn("aiohttp did not install: its row is skipped")
    session.run("python", str(ROOT / "benchmarks" / "run.py"), *session.posargs)


@nox.session
def bench_resume(session: nox.Session) -> None:
    """Resume after a reconnect storm: 1000 clients of the chat example come back at once and
    catch up on 100 missed messages, against a plain reconnect storm; memory history, Redis
    history, 2 workers sharing it (redis-server must be installed). About 1 minute. Prints a
    markdown table; `-- --json PATH`, `-- --rows memory`, `-- --clients 2000` etc."""
    session.install("-e", ".[redis]")
    session.run("python", str(ROOT / "benchmarks" / "resume.py"), *session.posargs)


@nox.session
def browser(session: nox.Session) -> None:
    """Real-browser tests (tests/test_browser.py): Playwright's Python package driving Debian's
    Chromium (/usr/bin/chromium; Playwright's own browser download is not used). Chromium is
    installed with apt-get when missing (needs root, as in CI). TRIO_WS_REQUIRE_BROWSER=1 makes
    a missing browser fail the tests instead of skipping them."""
    _install_dev(session)
    session.install("playwright")
    if not Path("/usr/bin/chromium").exists():
        if os.geteuid() != 0:
            session.error("/usr/bin/chromium is missing: sudo apt-get install chromium")
        session.run(
            "bash",
            "-c",
            "apt-get update -qq && apt-get install -y -qq chromium",
            env={"DEBIAN_FRONTEND": "noninteractive"},
            external=True,
        )
    session.run(
        "pytest", "tests/test_browser.py", *session.posargs, env={"TRIO_WS_REQUIRE_BROWSER": "1"}
    )


FUZZ_TARGETS = [
    "frames",
    "server_handshake",
    "client_handshake",
    "server_connection",
    "client_connection",
]


@nox.session
def fuzz(session: nox.Session) -> None:
    """Fuzz the frame parser, the handshake parsers and the connection core (tests/fuzz/).

    With atheris (coverage-guided, libFuzzer): each target for 60 s (`nox -s fuzz -- 300` for
    300 s), corpus kept in build/fuzz/TARGET/, crashes written as build/fuzz/TARGET-crash-*;
    then the Connection state machine with the hypothesis "fuzz" profile. Without atheris
    (no wheel for this Python): all of tests/test_fuzz.py with the "fuzz" profile.
    """
    _install_dev(session)
    seconds = session.posargs[0] if session.posargs else "60"
    env = {"HYPOTHESIS_PROFILE": "fuzz"}
    try:
        session.install("atheris")
    except nox.command.CommandFailed:
        session.warn("atheris did not install: long hypothesis run instead")
        session.run("pytest", "tests/test_fuzz.py", "-p", "no:cacheprovider", env=env)
        return
    out = ROOT / "build" / "fuzz"
    for target in FUZZ_TARGETS:
        corpus = out / target
        corpus.mkdir(parents=True, exist_ok=True)
        session.run(
            "python",
            str(ROOT / "tests" / "fuzz" / "run.py"),
            target,
            str(corpus),
            f"-max_total_time={seconds}",
            f"-artifact_prefix={out}/{target}-",
        )
    session.run(
        "pytest", "tests/test_fuzz.py", "-p", "no:cacheprovider", "-k", "ConnectionPair", env=env
    )


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site (mkdocs.yml, docs/) into build/docs with --strict, so that
    any warning (a broken link, a missing docstring reference) fails. `nox -s docs -- serve`
    serves it with live reload instead."""
    session.install("-e", ".")
    # griffe-sphinx: the `#:` comments above attributes are their docstrings (mkdocstrings'
    # griffe does not read them otherwise); ruff formats the rendered signatures.
    session.install(
        "mkdocs", "mkdocs-material", "mkdocstrings[python]", "griffe-sphinx", "ruff==0.17.6"
    )
    session.env["NO_MKDOCS_2_WARNING"] = "1"  # mkdocs-material's banner about MkDocs 2.0
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve", *session.posargs[1:])
        return
    session.run("mkdocs", "build", "--strict", "--site-dir", "build/docs", *session.posargs)
