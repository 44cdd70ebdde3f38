#!/usr/bin/env bash
# Prints the absolute path of a Hermes Agent `hermes` binary as the last line on stdout; progress goes to stderr.
#
#   HERMES_BIN="$(bash scripts/ensure-hermes.sh | tail -n 1)"
#
# Hermes Agent (Nous Research) is a Python package on PyPI. It goes into its own virtualenv under
# ${AGENTPLANE_TOOLS_DIR:-$HOME/.cache/agentplane}/hermes-venv, pinned: hermes-agent itself, plus aiohttp, which its
# API server imports but which the package only pulls in through the `messaging` extra. A stamp file records the
# pinned versions, so a rerun with the same pins does nothing.
set -euo pipefail

HERMES_VERSION="0.19.0"
AIOHTTP_VERSION="3.14.1"
CACHE_DIR="${AGENTPLANE_TOOLS_DIR:-$HOME/.cache/agentplane}"
VENV="$CACHE_DIR/hermes-venv"
STAMP="$VENV/.agentplane-hermes.stamp"
WANT="hermes-agent==$HERMES_VERSION aiohttp==$AIOHTTP_VERSION"

log() { echo "ensure-hermes: $*" >&2; }

if [ -x "$VENV/bin/hermes" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  log "using $VENV/bin/hermes ($WANT)"
  echo "$VENV/bin/hermes"
  exit 0
fi

python="$(command -v python3 || true)"
if [ -z "$python" ]; then
  log "python3 is not installed"
  exit 1
fi
if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  log "hermes-agent needs Python >= 3.11, found $("$python" --version 2>&1)"
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
"$VENV/bin/pip" install --quiet --disable-pip-version-check $WANT >&2
echo "$WANT" >"$STAMP"
log "installed $VENV/bin/hermes"
echo "$VENV/bin/hermes"
