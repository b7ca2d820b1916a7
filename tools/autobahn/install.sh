#!/usr/bin/env bash
# Install the Autobahn|Testsuite fuzzing client (`wstest`) for the conformance run.
#
# wstest only runs on Python 2.7. This script:
#   1. picks a python2.7: $AUTOBAHN_PYTHON2 if set, else one from pyenv, else one on PATH or
#      in /usr/bin, else installs Debian bullseye's python2.7 with apt (needs root or sudo);
#   2. gives that interpreter a pip if it has none (wheels fetched with `python3 -m pip download`);
#   3. installs the pinned autobahntestsuite into a private folder (pip --target), so the
#      python2.7 interpreter itself is left untouched;
#   4. writes a launcher, "<install folder>/wstest", which tools/autobahn/run.py uses.
#
# Idempotent: a second run with the same version pin and interpreter does nothing.
# The install folder is $TRIO_WS_AUTOBAHN_HOME, default ${XDG_CACHE_HOME:-~/.cache}/trio_ws/autobahn
# (outside the work tree, so it survives fresh clones on the same machine). `rm -rf` it to reset.
set -euo pipefail

WSTEST_VERSION="25.10.1"
home="${TRIO_WS_AUTOBAHN_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/trio_ws/autobahn}"
lib="$home/lib"
stamp="$home/installed"

log() { printf '[autobahn-install] %s\n' "$*"; }

is_py27() {
  [ -n "$1" ] && [ -x "$1" ] &&
    "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' >/dev/null 2>&1
}

# The interpreter itself, not a wrapper such as a pyenv shim (whose choice can change later).
real_executable() { "$1" -c 'import sys; print(sys.executable)'; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    log "need root (or sudo) to run: $*"
    exit 1
  fi
}

find_python2() {
  local candidate
  if [ -n "${AUTOBAHN_PYTHON2:-}" ]; then
    if is_py27 "$AUTOBAHN_PYTHON2"; then
      real_executable "$AUTOBAHN_PYTHON2"
      return 0
    fi
    log "AUTOBAHN_PYTHON2=$AUTOBAHN_PYTHON2 is not a working python2.7" >&2
    return 1
  fi
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7*/bin/python2.7 \
    "$(command -v python2.7 || true)" /usr/bin/python2.7 /usr/local/bin/python2.7; do
    if is_py27 "$candidate"; then
      real_executable "$candidate"
      return 0
    fi
  done
  return 1
}

apt_install_python2() {
  # Debian 12+ dropped python2.7; Debian 11 (bullseye) still has it. Add bullseye as a
  # low-priority source so nothing else on the machine is pulled from it.
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  [ -e "$keyring" ] || keyring=/usr/share/keyrings/debian-archive-keyring.pgp
  log "no python2.7 found: installing Debian bullseye's python2.7 with apt"
  as_root mkdir -p /etc/apt/sources.list.d /etc/apt/preferences.d
  printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bullseye\nComponents: main\nSigned-By: %s\n' \
    "$keyring" | as_root tee /etc/apt/sources.list.d/trio-ws-bullseye-python2.sources >/dev/null
  printf 'Package: *\nPin: release n=bullseye\nPin-Priority: 100\n' |
    as_root tee /etc/apt/preferences.d/trio-ws-bullseye-python2 >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # python2.7-dev and a C compiler: wsaccel (an autobahn speed-up) is compiled from source.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -t bullseye python2.7 python2.7-dev >/dev/null
  command -v gcc >/dev/null 2>&1 ||
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev >/dev/null
}

# pip prints a warning for every configured index that has no page for a package; drop those.
quiet_pip_filter() { grep -v -e 'is ignored: it is neither' -e DEPRECATION -e 'pip version' || true; }

py2=$(find_python2 || true)
if [ -z "$py2" ]; then
  apt_install_python2
  py2=$(find_python2 || true)
  if [ -z "$py2" ]; then
    log "python2.7 is still missing after apt-get install"
    exit 1
  fi
fi

want="autobahntestsuite==$WSTEST_VERSION python=$py2"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$home/wstest" ] &&
  "$home/wstest" --autobahnversion >/dev/null 2>&1; then
  log "wstest already installed: $home/wstest ($want)"
  exit 0
fi

log "using $py2 ($("$py2" --version 2>&1))"
mkdir -p "$home"
# Work from there, not from the work tree: python2's pip would see the project's *.egg-info.
cd "$home"

if ! "$py2" -m pip --version >/dev/null 2>&1; then
  log "bootstrapping pip for python2.7"
  wheels=$(mktemp -d)
  trap 'rm -rf "$wheels"' EXIT
  python3 -m pip download -q --no-deps --disable-pip-version-check -d "$wheels" \
    "pip==20.3.4" "setuptools==44.1.1" "wheel==0.37.1" 2>&1 | quiet_pip_filter
  [ -e "$wheels/pip-20.3.4-py2.py3-none-any.whl" ] || { log "could not download pip"; exit 1; }
  set +e
  PYTHONWARNINGS=ignore "$py2" "$wheels/pip-20.3.4-py2.py3-none-any.whl/pip" install -q \
    --no-index --disable-pip-version-check "$wheels"/*.whl 2>&1 | quiet_pip_filter
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" -ne 0 ]; then
    log "pip bootstrap failed (exit $status)"
    exit "$status"
  fi
fi

log "installing autobahntestsuite==$WSTEST_VERSION into $lib (takes 20 s to 3 min)"
rm -rf "$lib" "$stamp"
set +e
PYTHONWARNINGS=ignore "$py2" -m pip install -q --disable-pip-version-check --no-warn-script-location \
  --target "$lib" "autobahntestsuite==$WSTEST_VERSION" 2>&1 | quiet_pip_filter
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
  log "pip install failed (exit $status)"
  exit "$status"
fi

# The launcher. `site.addsitedir` (not PYTHONPATH) so the zope namespace-package .pth file is
# honoured; the private folder is then moved to the front of sys.path to win over anything
# installed in the interpreter's own site-packages.
cat >"$home/wstest.py" <<'EOF'
import os
import site
import sys

lib = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib")
site.addsitedir(lib)
sys.path.remove(lib)
sys.path.insert(0, lib)
sys.argv[0] = "wstest"
from autobahntestsuite.wstest import run  # noqa: E402

run()
EOF
cat >"$home/wstest" <<EOF
#!/bin/sh
# Generated by tools/autobahn/install.sh: runs Autobahn|Testsuite's wstest.
PYTHONWARNINGS=ignore exec "$py2" -s "$home/wstest.py" "\$@"
EOF
chmod +x "$home/wstest"

"$home/wstest" --autobahnversion >/dev/null
echo "$want" >"$stamp"
log "wstest ready: $home/wstest"
