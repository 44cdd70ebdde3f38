#!/usr/bin/env bash
# Prints the absolute path of a Hermes Agent `hermes` binary as the last line on stdout; progress goes to stderr.
#
#   HERMES_BIN="$(bash scripts/ensure-hermes.sh | tail -n 1)"
#
# Hermes Agent (Nous Research) is a Python package on PyPI. It goes into its own virtualenv, pinned: hermes-agent
# itself, plus aiohttp, which its API server imports but which the package only pulls in through the `messaging` extra.
#
# Each session's Hermes runs in the session's sandbox, as an unprivileged user, with the virtualenv mounted read-only
# and the interpreter it links to reachable (runtimes/hermes/install.ts). As root, whose home is 0700, the virtualenv
# is AGENTPLANE_HERMES_VENV (default /opt/agentplane/hermes, readable by all, writable by root only) on the system's
# /usr/bin/python3 (/usr is in every sandbox); as anyone else, ~/.cache/agentplane/hermes-venv on the first python3
# (the sandbox runs as that user, and the interpreter's prefix is mounted too).
set -euo pipefail

HERMES_VERSION="0.19.0"
AIOHTTP_VERSION="3.14.1"
if [ "$(id -u)" = 0 ]; then
  export ENSURE_VENV="${AGENTPLANE_HERMES_VENV:-/opt/agentplane/hermes}"
  export ENSURE_PYTHON="${AGENTPLANE_HERMES_PYTHON:-/usr/bin/python3}"
  mkdir -p "$(dirname "$ENSURE_VENV")"
  chmod 755 "$(dirname "$ENSURE_VENV")"
fi
bin="$(bash "$(dirname "${BASH_SOURCE[0]}")/ensure-python-tool.sh" hermes hermes 3.11 "hermes-agent==$HERMES_VERSION" "aiohttp==$AIOHTTP_VERSION" | tail -n 1)"
# the sandbox's user reads it (pip keeps the umask's modes; a 077 umask would hide the install)
[ "$(id -u)" = 0 ] && chmod -R a+rX,go-w "$ENSURE_VENV"
echo "$bin"
