#!/usr/bin/env bash
# Prints the absolute path of LiteLLM's `litellm` binary (its proxy) as the last line on stdout; progress goes to
# stderr. Only bench/gateway.ts uses it: LiteLLM's proxy is the peer the model gateway is measured against.
#
#   LITELLM="$(bash scripts/ensure-litellm.sh | tail -n 1)"
#
# Pinned to litellm[proxy]==1.80.17 in its own virtualenv (scripts/ensure-python-tool.sh): newer releases' proxy
# extra needs `litellm-proxy`, a package the registry reachable here does not serve.
set -euo pipefail
bash "$(dirname "${BASH_SOURCE[0]}")/ensure-python-tool.sh" litellm litellm 3.9 "litellm[proxy]==1.80.17"
