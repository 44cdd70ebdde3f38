#!/usr/bin/env bash
# Prints the absolute path of LiteLLM's `litellm` binary (its proxy) as the last line on stdout; progress goes to
# stderr. Only bench/gateway.ts uses it: LiteLLM's proxy is the peer the model gateway is measured against.
#
#   LITELLM="$(bash scripts/ensure-litellm.sh | tail -n 1)"
#
# Pinned to litellm[proxy]==1.80.17 in its own virtualenv (scripts/ensure-python-tool.sh, which keeps the stamp that
# makes a rerun do nothing): newer releases' proxy extra needs `litellm-proxy`, a package the registry reachable here
# does not serve. The virtualenv is ${AGENTPLANE_TOOLS_DIR:-$HOME/.cache/agentplane}/litellm-venv, or ENSURE_VENV.
#
# The stamp alone is trusted only while the package still imports at the pinned version: a virtualenv that a hand-run
# pip changed or broke is removed and built anew (pip alone would keep a broken install whose version matches). The
# check imports litellm with LITELLM_LOCAL_MODEL_COST_MAP=True, without which the import fetches LiteLLM's model cost
# map from the internet.
#
# Starting the proxy quietly offline (up in about 4 s here; 1.80.17 reads no LITELLM_TELEMETRY, and its `--telemetry`
# flag sets a value nothing reads; without --host it listens on 0.0.0.0):
#
#   LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR LITELLM_DONT_SHOW_FEEDBACK_BOX=true \
#     "$LITELLM" --config config.yaml --host 127.0.0.1 --port 4000 --num_workers 1
#
# Uvicorn still logs a line per request; `--log_config FILE` (a logging dictConfig, JSON or YAML, with the `uvicorn`
# and `uvicorn.access` loggers at WARNING) silences it.
set -euo pipefail

LITELLM_VERSION="1.80.17"
VENV="${ENSURE_VENV:-${AGENTPLANE_TOOLS_DIR:-$HOME/.cache/agentplane}/litellm-venv}"
STAMP="$VENV/.agentplane-litellm.stamp"

log() { echo "ensure-litellm: $*" >&2; }
# the version that imports, or nothing
imported_version() {
  LITELLM_LOCAL_MODEL_COST_MAP=True "$VENV/bin/python" -c \
    'import importlib.metadata, litellm; print(importlib.metadata.version("litellm"))' 2>/dev/null || true
}

imports=""
if [ -f "$STAMP" ]; then
  if [ "$(imported_version)" = "$LITELLM_VERSION" ]; then
    imports=yes
  else
    log "$VENV has no importable litellm $LITELLM_VERSION: building it anew"
    rm -rf "$VENV"
  fi
fi
bin="$(bash "$(dirname "${BASH_SOURCE[0]}")/ensure-python-tool.sh" litellm litellm 3.9 "litellm[proxy]==$LITELLM_VERSION" | tail -n 1)"
if [ -z "$imports" ] && [ "$(imported_version)" != "$LITELLM_VERSION" ]; then
  log "litellm $LITELLM_VERSION does not import in $VENV after installing it"
  rm -f "$STAMP"
  exit 1
fi
echo "$bin"
