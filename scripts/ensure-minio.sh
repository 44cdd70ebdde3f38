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

# shellcheck source=scripts/go-install-tool.sh
source "$(dirname "${BASH_SOURCE[0]}")/go-install-tool.sh"
log "building MinIO (about 3 minutes on 2 cores)"
go_install_tool "$MINIO_MODULE" minio "$TOOLS_DIR" || exit 1
found "$target"
