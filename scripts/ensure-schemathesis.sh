#!/usr/bin/env bash
# Prints the absolute path of a Schemathesis `st` binary as the last line on stdout; progress goes to stderr.
#
#   ST_BIN="$(bash scripts/ensure-schemathesis.sh | tail -n 1)"
#
# Schemathesis (the API fuzzer behind `npm run fuzz`) is a Python package on PyPI. It goes into its own virtualenv
# under ${AGENTPLANE_TOOLS_DIR:-$HOME/.cache/agentplane}/schemathesis-venv, pinned. A stamp file records the pin, so a
# rerun with the same pin does nothing.
set -euo pipefail

SCHEMATHESIS_VERSION="4.32.5"
CACHE_DIR="${AGENTPLANE_TOOLS_DIR:-$HOME/.cache/agentplane}"
VENV="$CACHE_DIR/schemathesis-venv"
STAMP="$VENV/.agentplane-schemathesis.stamp"
WANT="schemathesis==$SCHEMATHESIS_VERSION"

log() { echo "ensure-schemathesis: $*" >&2; }

if [ -x "$VENV/bin/st" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  log "using $VENV/bin/st ($WANT)"
  echo "$VENV/bin/st"
  exit 0
fi

python="$(command -v python3 || true)"
if [ -z "$python" ]; then
  log "python3 is not installed"
  exit 1
fi
if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
  log "schemathesis $SCHEMATHESIS_VERSION needs Python >= 3.10, found $("$python" --version 2>&1)"
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
log "installing $WANT (a minute on a cold cache)"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "$WANT" >&2
echo "$WANT" >"$STAMP"
log "installed $VENV/bin/st"
echo "$VENV/bin/st"
