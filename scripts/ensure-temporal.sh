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

# Go is often installed under /usr/local/go without being on a non-login shell's PATH.
GO="$(command -v go 2>/dev/null || true)"
if [ -z "$GO" ] && [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go; fi
if [ -z "$GO" ]; then
  cat >&2 <<EOF
ensure-temporal: error: no Temporal CLI found and no Go toolchain to build one.
  Looked at: \$TEMPORAL_CLI_PATH (${TEMPORAL_CLI_PATH:-unset}), \`temporal\` on PATH, $target
  Fix it one of these ways:
    - install Go (1.21 or newer; the CLI needs Go 1.25, which Go 1.21+ fetches itself through the module proxy)
      from https://go.dev/dl/ and rerun this script, or build it yourself:
        CGO_ENABLED=0 GOBIN="$TOOLS_DIR" go install $TEMPORAL_CLI_MODULE
    - or install the Temporal CLI (https://docs.temporal.io/cli#install) and put \`temporal\` on PATH,
    - or point TEMPORAL_CLI_PATH at an existing binary.
EOF
  exit 1
fi

mkdir -p "$TOOLS_DIR"

# Two processes (say, CI and a test run) must not build at the same time: take a lock, then look again.
exec 9>"$TOOLS_DIR/.temporal-build.lock"
if command -v flock >/dev/null 2>&1; then
  if ! flock -n 9; then
    log "another build of the Temporal CLI is running; waiting for it"
    flock 9
  fi
fi
if [ -x "$target" ]; then
  found "$(abs_path "$target")"
fi

# Build into a staging folder next to the target and rename, so nobody ever sees a half-written binary.
staging="$(mktemp -d "$TOOLS_DIR/.build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT

log "building the Temporal CLI with $("$GO" version)"
log "  CGO_ENABLED=0 GOBIN=$TOOLS_DIR go install $TEMPORAL_CLI_MODULE"
log "  this takes several minutes on a cold cache (about 5 min on 2 cores, mostly compiling the server)"
started=$(date +%s)
if ! CGO_ENABLED=0 GOBIN="$staging" "$GO" install "$TEMPORAL_CLI_MODULE" >&2 9>&-; then
  log "error: go install $TEMPORAL_CLI_MODULE failed after $(($(date +%s) - started))s (output above)"
  exit 1
fi
mv -f "$staging/temporal" "$target"
log "built $target in $(($(date +%s) - started))s"
"$target" --version >&2 || true

found "$(abs_path "$target")"
