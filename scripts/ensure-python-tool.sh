#!/usr/bin/env bash
# Installs a pinned Python tool from PyPI into its own virtualenv and prints the absolute path of its binary as the
# last line on stdout; progress goes to stderr. Shared by scripts/ensure-hermes.sh and scripts/ensure-schemathesis.sh.
#
#   bash scripts/ensure-python-tool.sh NAME BINARY MIN_PYTHON PACKAGE==VERSION [PACKAGE==VERSION ...]
#
# The virtualenv is ${AGENTPLANE_TOOLS_DIR:-$HOME/.cache/agentplane}/NAME-venv, or ENSURE_VENV when set, built on the
# first python3 on PATH, or ENSURE_PYTHON when set. A stamp file records the pins and the interpreter, so a rerun with
# the same ones does nothing, and changed ones reinstall.
set -euo pipefail

NAME="$1"
BINARY="$2"
MIN_PYTHON="$3"
shift 3
CACHE_DIR="${AGENTPLANE_TOOLS_DIR:-$HOME/.cache/agentplane}"
VENV="${ENSURE_VENV:-$CACHE_DIR/$NAME-venv}"
python="${ENSURE_PYTHON:-$(command -v python3 || true)}"
PINS="$*"
WANT="$PINS${ENSURE_PYTHON:+ python=$ENSURE_PYTHON}"
STAMP="$VENV/.agentplane-$NAME.stamp"

log() { echo "ensure-$NAME: $*" >&2; }

if [ -x "$VENV/bin/$BINARY" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  log "using $VENV/bin/$BINARY ($WANT)"
  echo "$VENV/bin/$BINARY"
  exit 0
fi

if [ -z "$python" ] || [ ! -x "$python" ]; then
  log "python3 is not installed${ENSURE_PYTHON:+ at $ENSURE_PYTHON}"
  exit 1
fi
if ! "$python" -c "import sys; sys.exit(0 if sys.version_info >= tuple(map(int, '$MIN_PYTHON'.split('.'))) else 1)"; then
  log "$NAME needs Python >= $MIN_PYTHON, found $("$python" --version 2>&1)"
  exit 1
fi
if [ -n "${ENSURE_PYTHON:-}" ] && [ -x "$VENV/bin/python" ] && [ "$(readlink -f "$VENV/bin/python")" != "$(readlink -f "$python")" ]; then
  log "recreating $VENV on $python"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  mkdir -p "$(dirname "$VENV")"
  if ! "$python" -m venv "$VENV" >&2; then
    log "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    exit 1
  fi
fi
log "installing $PINS (a minute or two on a cold cache)"
# shellcheck disable=SC2086 # one argument per pin
"$VENV/bin/pip" install --quiet --disable-pip-version-check $PINS >&2
echo "$WANT" >"$STAMP"
log "installed $VENV/bin/$BINARY"
echo "$VENV/bin/$BINARY"
