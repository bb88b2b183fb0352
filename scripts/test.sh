#!/usr/bin/env bash
# Run every test: builds/starts what the end-to-end tests need first (a cached llama-server
# build, a private Docker daemon), then pytest over the whole workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
eval "$(bash scripts/setup_llama_server.sh)"
export LLAMA_SERVER_BIN LLAMA_MODEL_PATH
if [ "${THUNDER_SKIP_DOCKER:-0}" != "1" ] && [ -f scripts/setup_docker.sh ]; then
  eval "$(bash scripts/setup_docker.sh)"
  export DOCKER_HOST
fi
if [ "${THUNDER_SKIP_BROWSER:-0}" != "1" ]; then
  eval "$(bash scripts/setup_browser.sh)"   # Debian's chromium for the live page's test
  export CHROMIUM_BIN
fi
exec .venv/bin/pytest -q "$@"
