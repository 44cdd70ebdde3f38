#!/usr/bin/env bash
# Installs a pinned Python tool from PyPI into its own virtualenv and prints the absolute path of its binary as the
# last line on stdout; progress goes to stderr. Shared by scripts/ensure-hermes.sh and scripts/ensure-schemathesis.sh.
#
#   bash scripts/ensure-python-tool.sh NAME BINARY MIN_PYTHON PACKAGE==VERSION [PACKAGE==VERSION ...]
#
# The virtualenv is ${AGENTPLANE_TOOLS_DIR:-$HOME/.cache/agentplane}/NAME-venv. A stamp file records the pins, so a
# rerun with the same pins does nothing, and changed pins reinstall.
set -euo pipefail

NAME="$1"
BINARY="$2"
MIN_PYTHON="$3"
shift 3
WANT="$*"
CACHE_DIR="${AGENTPLANE_TOOLS_DIR:-$HOME/.cache/agentplane}"
VENV="$CACHE_DIR/$NAME-venv"
STAMP="$VENV/.agentplane-$NAME.stamp"

log() { echo "ensure-$NAME: $*" >&2; }

if [ -x "$VENV/bin/$BINARY" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  log "using $VENV/bin/$BINARY ($WANT)"
  echo "$VENV/bin/$BINARY"
  exit 0
fi

python="$(command -v python3 || true)"
if [ -z "$python" ]; then
  log "python3 is not installed"
  exit 1
fi
if ! "$python" -c "import sys; sys.exit(0 if sys.version_info >= tuple(map(int, '$MIN_PYTHON'.split('.'))) else 1)"; then
  log "$NAME needs Python >= $MIN_PYTHON, found $("$python" --version 2>&1)"
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  mkdir -p "$CACHE_DIR"
  if ! "$python" -m venv "$VENV" >&2; then
    log "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    exit 1
  fi
fi
log "installing $WANT (a minute or two on a cold cache)"
# shellcheck disable=SC2086 # one argument per pin
"$VENV/bin/pip" install --quiet --disable-pip-version-check $WANT >&2
echo "$WANT" >"$STAMP"
log "installed $VENV/bin/$BINARY"
echo "$VENV/bin/$BINARY"
