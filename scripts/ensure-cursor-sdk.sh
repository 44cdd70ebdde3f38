#!/usr/bin/env bash
# Installs the official Cursor SDK into a cache folder and prints the path of its ESM entry as the last line on stdout
# (progress on stderr):
#
#   AGENTPLANE_CURSOR_SDK="$(bash scripts/ensure-cursor-sdk.sh | tail -n 1)"
#
# Only test/cursor-sdk.test.ts needs it: it runs the SDK against our Cursor contract fake. It is not a project
# dependency because the SDK imports `sqlite3` (its local store) at load time, and sqlite3's install script downloads a
# prebuilt addon from GitHub, which this machine cannot reach. So scripts are skipped and the addon is built here with
# node-gyp against Node's own headers (/usr/include/node) and Debian's SQLite (libsqlite3-dev): about a minute.
# @cursor/sdk 1.0.18 is the newest that runs on Node 20 (1.0.32 needs Node >= 22.13).
# Folder: ${AGENTPLANE_TOOLS_DIR:-$HOME/.cache/agentplane}/cursor-sdk. Idempotent: a second run only checks.
set -euo pipefail

SDK_VERSION=1.0.18
SQLITE3_VERSION=5.1.7
DIR="${AGENTPLANE_TOOLS_DIR:-$HOME/.cache/agentplane}/cursor-sdk"
MODULES="$DIR/node_modules"
ENTRY="$MODULES/@cursor/sdk/dist/esm/index.js"
STAMP="$DIR/.agentplane-cursor-sdk.stamp"
WANT="@cursor/sdk@$SDK_VERSION sqlite3@$SQLITE3_VERSION node-$(node --version)"

log() { echo "ensure-cursor-sdk: $*" >&2; }

mkdir -p "$DIR"
# CI and a test run must not install at the same time: take a lock, then look again.
exec 9>"$DIR/.install.lock"
if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
  log "another install is running; waiting for it"
  flock 9
fi

if [ -f "$ENTRY" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  log "present ($WANT)"
  echo "$ENTRY"
  exit 0
fi

started=$(date +%s)
node_prefix="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")"
for need in "$node_prefix/include/node/node.h" /usr/include/sqlite3.h; do
  if [ ! -f "$need" ]; then
    log "error: $need is missing (Node's headers / Debian libsqlite3-dev), so sqlite3 cannot be built"
    exit 1
  fi
done

rm -f "$STAMP"
log "installing @cursor/sdk@$SDK_VERSION and sqlite3@$SQLITE3_VERSION without install scripts"
npm install --prefix "$DIR" --no-audit --no-fund --no-save --ignore-scripts --loglevel=error \
  "@cursor/sdk@$SDK_VERSION" "sqlite3@$SQLITE3_VERSION" >&2 9>&-

log "building the sqlite3 addon against $node_prefix/include/node and the system SQLite (about a minute)"
(cd "$MODULES/sqlite3" && "$MODULES/.bin/node-gyp" rebuild --nodedir="$node_prefix" --sqlite=/usr -j 2 >&2 9>&-)

if ! (cd "$DIR" && node --input-type=module -e "await import('$ENTRY')" >&2 9>&-); then
  log "error: $ENTRY does not load"
  exit 1
fi
echo "$WANT" >"$STAMP"
log "ready in $(($(date +%s) - started))s"
echo "$ENTRY"
