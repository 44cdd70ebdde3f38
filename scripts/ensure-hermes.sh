#!/usr/bin/env bash
# Prints the absolute path of a Hermes Agent `hermes` binary as the last line on stdout; progress goes to stderr.
#
#   HERMES_BIN="$(bash scripts/ensure-hermes.sh | tail -n 1)"
#
# Hermes Agent (Nous Research) is a Python package on PyPI. It goes into its own virtualenv under
# ${AGENTPLANE_TOOLS_DIR:-$HOME/.cache/agentplane}/hermes-venv, pinned: hermes-agent itself, plus aiohttp, which its
# API server imports but which the package only pulls in through the `messaging` extra.
set -euo pipefail

HERMES_VERSION="0.19.0"
AIOHTTP_VERSION="3.14.1"
exec bash "$(dirname "${BASH_SOURCE[0]}")/ensure-python-tool.sh" hermes hermes 3.11 "hermes-agent==$HERMES_VERSION" "aiohttp==$AIOHTTP_VERSION"
