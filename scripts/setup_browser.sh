#!/usr/bin/env bash
# A headless browser for the live page's test: Debian's chromium package (no browser download
# from elsewhere; Playwright drives it through executable_path). Idempotent; prints
#   CHROMIUM_BIN=/usr/bin/chromium
# for `eval`. Skipped with THUNDER_SKIP_BROWSER=1 (the test then skips, saying why).
set -euo pipefail
if [ "${THUNDER_SKIP_BROWSER:-0}" = "1" ]; then
  exit 0
fi
bin="$(command -v chromium || true)"
if [ -z "$bin" ]; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  echo "[browser] installing Debian's chromium package" >&2
  # another apt run (e.g. the Docker setup) may hold the lock: wait for it
  for _ in $(seq 1 60); do
    if $SUDO apt-get update -qq >/dev/null 2>&1; then break; fi
    sleep 5
  done
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=300 chromium fonts-dejavu-core >/dev/null
  bin="$(command -v chromium)"
fi
echo "CHROMIUM_BIN=$bin"
