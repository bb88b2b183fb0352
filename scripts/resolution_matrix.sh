#!/usr/bin/env bash
# Test the dependency ranges at both ends: resolve the workspace with uv's lowest-direct or
# highest resolution (ignoring uv.lock), install it into a throwaway venv and run a fast subset
# of the tests there.
#   bash scripts/resolution_matrix.sh lowest-direct
#   bash scripts/resolution_matrix.sh highest
# Prints the resolved versions of the direct dependencies, then pytest's summary. Exit status is
# pytest's. Needs PyPI (uv's cache makes reruns fast). tests/test_resolution_matrix.py runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
resolution="${1:?usage: resolution_matrix.sh lowest-direct|highest}"
case "$resolution" in lowest-direct|highest) ;; *) echo "unknown resolution: $resolution" >&2; exit 2;; esac
UV="$(command -v uv || echo "$(python3 -m site --user-base)/bin/uv")"
PY="$(.venv/bin/python -c 'import sys; print(sys._base_executable)')"
work="$(mktemp -d "${TMPDIR:-/tmp}/thunder-resolution-XXXXXX")"
trap 'rm -rf "$work"' EXIT
# the tracked tree only (no .venv, no caches)
git ls-files -z pyproject.toml README.md LICENSE docs packages services tests | xargs -0 cp --parents -t "$work"
cd "$work"
upgrade=()
if [ "$resolution" = "highest" ]; then upgrade=(--upgrade); fi
"$UV" lock -q --resolution "$resolution" "${upgrade[@]}" --python "$PY"
UV_PROJECT_ENVIRONMENT="$work/.venv" "$UV" sync -q --frozen --all-packages --python "$PY"
.venv/bin/python - <<'PY'
import importlib.metadata as m
names = ["pydantic", "pydantic-settings", "httpx", "fastapi", "starlette", "uvicorn", "orjson",
         "prometheus-client", "langgraph", "langchain-core", "langchain", "langchain-openai",
         "openhands-sdk", "docker", "aiohttp", "tqdm", "matplotlib"]
print("resolved: " + ", ".join(f"{n}=={m.version(n)}" for n in names))
PY
exec .venv/bin/pytest -q -p no:cacheprovider -m "not slow and not docker and not llama" \
  packages/thunder-core/tests packages/thunder-langgraph/tests \
  services/scheduler/tests/test_service_settings.py services/scheduler/tests/test_service_cli_help.py \
  services/scheduler/tests/test_service_lifecycle.py services/scheduler/tests/test_proxy_routes.py \
  services/sim-engine/tests/test_sim_server_api.py
