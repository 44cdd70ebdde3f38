#!/usr/bin/env bash
# Prints the absolute path of a Schemathesis `st` binary as the last line on stdout; progress goes to stderr.
#
#   ST_BIN="$(bash scripts/ensure-schemathesis.sh | tail -n 1)"
#
# Schemathesis (the API fuzzer behind `npm run fuzz`) is a Python package on PyPI. It goes into its own virtualenv
# under ${AGENTPLANE_TOOLS_DIR:-$HOME/.cache/agentplane}/schemathesis-venv, pinned.
set -euo pipefail

SCHEMATHESIS_VERSION="4.32.5"
exec bash "$(dirname "${BASH_SOURCE[0]}")/ensure-python-tool.sh" schemathesis st 3.10 "schemathesis==$SCHEMATHESIS_VERSION"
