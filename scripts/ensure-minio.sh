#!/usr/bin/env bash
# Prints the absolute path of a MinIO server binary as the last line on stdout; progress goes to stderr. The
# snapshot tests run the S3 snapshot store against it (test/support/minio.ts).
#
#   export AGENTPLANE_MINIO_BIN="$(bash scripts/ensure-minio.sh | tail -n 1)"
#
# Looks in this order and stops at the first hit:
#   1. $AGENTPLANE_MINIO_BIN, if it is set and executable
#   2. ${AGENTPLANE_TOOLS_DIR:-$HOME/.cache/agentplane/bin}/minio
#   3. builds it into that folder with `go install` from the Go module proxy (about 3 minutes on 2 cores)
#
# MinIO tags its releases RELEASE.<date>, which Go does not read as versions: the module proxy serves its commits as
# pseudo-versions, and this one is pinned. MinIO is AGPL-3.0: it runs as a separate test server, nothing links it.
set -euo pipefail

MINIO_MODULE="github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c"
TOOLS_DIR="${AGENTPLANE_TOOLS_DIR:-$HOME/.cache/agentplane/bin}"

log() { echo "ensure-minio: $*" >&2; }

found() {
  log "using $1"
  echo "$1"
  exit 0
}

if [ -n "${AGENTPLANE_MINIO_BIN:-}" ]; then
  if [ -f "$AGENTPLANE_MINIO_BIN" ] && [ -x "$AGENTPLANE_MINIO_BIN" ]; then found "$AGENTPLANE_MINIO_BIN"; fi
  log "warning: AGENTPLANE_MINIO_BIN=$AGENTPLANE_MINIO_BIN is not an executable file; looking elsewhere"
fi

target="$TOOLS_DIR/minio"
if [ -x "$target" ]; then found "$target"; fi

GO="$(command -v go 2>/dev/null || true)"
if [ -z "$GO" ] && [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go; fi
if [ -z "$GO" ]; then
  log "error: no MinIO at $target and no Go toolchain to build one (install Go, or set AGENTPLANE_MINIO_BIN)"
  exit 1
fi

mkdir -p "$TOOLS_DIR"
exec 9>"$TOOLS_DIR/.minio-build.lock"
if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
  log "another build of MinIO is running; waiting for it"
  flock 9
fi
if [ -x "$target" ]; then found "$target"; fi

staging="$(mktemp -d "$TOOLS_DIR/.build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
log "building MinIO with $("$GO" version): CGO_ENABLED=0 go install $MINIO_MODULE (about 3 minutes)"
started=$(date +%s)
if ! CGO_ENABLED=0 GOBIN="$staging" "$GO" install "$MINIO_MODULE" >&2 9>&-; then
  log "error: go install $MINIO_MODULE failed after $(($(date +%s) - started))s (output above)"
  exit 1
fi
mv -f "$staging/minio" "$target"
log "built $target in $(($(date +%s) - started))s"
found "$target"
