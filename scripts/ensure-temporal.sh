#!/usr/bin/env bash
# Prints the absolute path of a Temporal CLI binary as the last line on stdout; progress goes to stderr.
#
#   export TEMPORAL_CLI_PATH="$(bash scripts/ensure-temporal.sh | tail -n 1)"
#
# Looks in this order and stops at the first hit:
#   1. $TEMPORAL_CLI_PATH, if it is set and executable
#   2. `temporal` on PATH
#   3. ${AGENTPLANE_TOOLS_DIR:-$HOME/.cache/agentplane/bin}/temporal
#   4. builds it into that folder with `go install` (several minutes on a cold Go cache)
#
# v1.5.1 is the last CLI tag that `go install` can build (v1.6+ carries a `replace` directive in go.mod).
set -euo pipefail

TEMPORAL_CLI_MODULE="github.com/temporalio/cli/cmd/temporal@v1.5.1"
TOOLS_DIR="${AGENTPLANE_TOOLS_DIR:-$HOME/.cache/agentplane/bin}"

log() { echo "ensure-temporal: $*" >&2; }

found() {
  log "using $1"
  echo "$1"
  exit 0
}

abs_path() { (cd "$(dirname "$1")" && echo "$PWD/$(basename "$1")"); }

if [ -n "${TEMPORAL_CLI_PATH:-}" ]; then
  if [ -f "$TEMPORAL_CLI_PATH" ] && [ -x "$TEMPORAL_CLI_PATH" ]; then
    found "$(abs_path "$TEMPORAL_CLI_PATH")"
  fi
  log "warning: TEMPORAL_CLI_PATH=$TEMPORAL_CLI_PATH is not an executable file; looking elsewhere"
fi

if on_path="$(command -v temporal 2>/dev/null)" && [ -n "$on_path" ]; then
  found "$(abs_path "$on_path")"
fi

target="$TOOLS_DIR/temporal"
if [ -x "$target" ]; then
  found "$(abs_path "$target")"
fi

# shellcheck source=scripts/go-install-tool.sh
source "$(dirname "${BASH_SOURCE[0]}")/go-install-tool.sh"
log "this takes several minutes on a cold cache (about 5 min on 2 cores, mostly compiling the server)"
go_install_tool "$TEMPORAL_CLI_MODULE" temporal "$TOOLS_DIR" || exit 1
"$target" --version >&2 || true
found "$(abs_path "$target")"
