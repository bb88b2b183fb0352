#!/usr/bin/env bash
# Create the workspace's virtual environment (.venv, Python 3.12) from the committed lock file.
# Works on a fresh machine: installs uv from PyPI if missing and finds a local 3.12 interpreter
# (uv's own Python downloads are not reachable here). Idempotent and fast when up to date.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[bootstrap] $*" >&2; }

if ! command -v uv >/dev/null 2>&1; then
  log "installing uv from PyPI"
  python3 -m pip install -q uv >&2
  hash -r
fi
UV="$(command -v uv || echo "$(python3 -m site --user-base)/bin/uv")"

find_python312() {
  local candidates=("${THUNDER_PYTHON:-}")
  if command -v pyenv >/dev/null 2>&1; then
    candidates+=("$(pyenv root)"/versions/3.12*/bin/python3.12)
  fi
  candidates+=("$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12)
  for c in "${candidates[@]}"; do
    if [ -n "$c" ] && [ -x "$c" ] && "$c" -c 'import sys; assert sys.version_info[:2] >= (3, 12)' 2>/dev/null; then
      echo "$c"; return 0
    fi
  done
  command -v python3.12 >/dev/null 2>&1 && python3.12 -c 'pass' 2>/dev/null && command -v python3.12 && return 0
  return 1
}

PY="$(find_python312)" || { log "no Python 3.12 interpreter found; set THUNDER_PYTHON=/path/to/python3.12"; exit 1; }
export UV_PYTHON="$PY"
log "syncing .venv with $PY"
"$UV" sync --frozen --all-packages --python "$PY" >&2
log "ready: $(.venv/bin/python --version)"
