#!/usr/bin/env bash
# Build the published packages (sdist + wheel each) into OUT_DIR (default: dist/).
#   bash scripts/build_packages.sh /tmp/dist
# thunder-testkit is internal and not built. tests/test_packages.py builds, inspects and
# installs these wheels into a fresh virtual environment.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(realpath -m "${1:-dist}")"
mkdir -p "$out"
UV="$(command -v uv || echo "$(python3 -m site --user-base)/bin/uv")"
for package in thunder-core thunder-scheduling thunder-scheduler thunder-sim \
               thunder-langgraph thunder-openhands; do
  "$UV" build -q --package "$package" --out-dir "$out" >&2
done
ls "$out"
