#!/usr/bin/env bash
# Build the scheduler's container image (deploy/Dockerfile) with the project's own Docker daemon
# and smoke-test it: --version, /health, /ready (503 without engines), /metrics, the live page.
#   eval "$(bash scripts/setup_docker.sh)"; bash scripts/docker_image_smoke.sh
#
# The daemon cannot pull from Docker Hub here, so unless python:3.12-slim-bookworm is already
# loaded, the base image is made locally: the host's Python 3.12 prefix (the interpreter,
# its standard library minus tests / tkinter, pip) plus the shared libraries it links, Debian's
# busybox-static as /bin/sh and the CA bundle, imported with `docker import`. The build itself
# runs offline: deploy/dist gets the three wheels and a wheelhouse of their dependencies
# (pinned by uv.lock, fetched from PyPI with pip download), installed with --no-index.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DOCKER_HOST:?set DOCKER_HOST (eval \"\$(bash scripts/setup_docker.sh)\")}"
export DOCKER_HOST
UV="$(command -v uv || echo "$(python3 -m site --user-base)/bin/uv")"
PY="$(.venv/bin/python -c 'import sys; print(sys._base_executable)')"
PREFIX="$("$PY" -c 'import sys; print(sys.base_prefix)')"
PYVER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
IMAGE="${THUNDER_IMAGE:-thunder-scheduler:smoke}"
HUB_BASE="python:${PYVER}-slim-bookworm"
LOCAL_BASE="thunder-local/python:${PYVER}"
log() { echo "[docker_image_smoke] $*" >&2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/thunder-image-XXXXXX")"
container=""
cleanup() {
  if [ -n "$container" ]; then docker rm -f "$container" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# 1. the build context: Dockerfile, wheels, wheelhouse
ctx="$work/ctx"
mkdir -p "$ctx/dist"
cp deploy/Dockerfile "$ctx/"
for package in thunder-core thunder-scheduling thunder-scheduler; do
  "$UV" build -q --package "$package" --wheel --out-dir "$ctx/dist" >&2
done
"$UV" export -q --frozen --package thunder-scheduler --extra tools --no-hashes \
  --no-emit-workspace --no-dev -o "$work/requirements.txt" >&2
"$UV" venv -q --python "$PY" "$work/pip" >&2
"$UV" pip install -q --python "$work/pip/bin/python" pip >&2
"$work/pip/bin/python" -m pip download -q --no-python-version-warning --disable-pip-version-check --no-deps \
  --only-binary=:all: -r "$work/requirements.txt" -d "$ctx/dist" >&2

# 2. the base image
if docker image inspect "$HUB_BASE" >/dev/null 2>&1; then
  base="$HUB_BASE"
elif docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
  base="$LOCAL_BASE"
else
  log "no $HUB_BASE (no registry here): making $LOCAL_BASE from $PREFIX"
  root="$work/rootfs"
  mkdir -p "$root$PREFIX" "$root/bin" "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp"
  chmod 1777 "$root/tmp"
  tar -C "$PREFIX" -c --exclude="lib/python$PYVER/test" --exclude="lib/python$PYVER/idlelib" \
    --exclude="lib/python$PYVER/tkinter" --exclude="lib/python$PYVER/site-packages" \
    --exclude="__pycache__" bin lib include 2>/dev/null | tar -C "$root$PREFIX" -x
  mkdir -p "$root$PREFIX/lib/python$PYVER/site-packages"
  cp -a "$PREFIX/lib/python$PYVER/site-packages/"pip* "$root$PREFIX/lib/python$PYVER/site-packages/"
  rm -f "$root$PREFIX/lib/python$PYVER/lib-dynload/"_tkinter*.so
  # the shared libraries the interpreter and its extension modules link, and the loader
  find "$root$PREFIX" -name '*.so*' -o -path '*/bin/python*' -type f | while read -r elf; do
    { ldd "$elf" 2>/dev/null || true; } | awk '/=> \// {print $3; next} $1 ~ /^\// {print $1}'
  done | sort -u | while read -r lib; do
    case "$lib" in "$PREFIX"/*) continue;; esac
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done || true
  # what manylinux wheels may link beyond glibc (PEP 600's allowed set)
  for lib in libgcc_s.so.1 libstdc++.so.6 libpthread.so.0 libdl.so.2 librt.so.1 libutil.so.1; do
    if [ -e "/lib/x86_64-linux-gnu/$lib" ]; then
      cp -L "/lib/x86_64-linux-gnu/$lib" "$root/lib/x86_64-linux-gnu/$lib"
    fi
  done
  cp /bin/busybox "$root/bin/busybox"
  for tool in sh ls cat env; do ln -s busybox "$root/bin/$tool"; done
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532::/tmp:/bin/sh\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
  ln -s "$PREFIX/bin/python$PYVER" "$root/usr/local/bin/python"
  ln -s "$PREFIX/bin/python$PYVER" "$root/usr/local/bin/python3"
  tar -C "$root" -c . | docker import \
    -c "ENV PATH=$PREFIX/bin:/usr/local/bin:/usr/bin:/bin" -c 'ENV LANG=C.UTF-8' - "$LOCAL_BASE" >/dev/null
  base="$LOCAL_BASE"
fi

# 3. the image, built offline
log "building $IMAGE from $base"
docker build -q --build-arg BASE_IMAGE="$base" --build-arg PIP_ARGS=--no-index \
  -t "$IMAGE" -f "$ctx/Dockerfile" "$ctx" >/dev/null

# 4. the smoke test
version="$(docker run --rm "$IMAGE" --version)"
echo "version: $version"
case "$version" in "thunder-scheduler "*"(contract "*) ;; *) log "bad --version: $version"; exit 1;; esac
port="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
container="$(docker run -d --network host -e THUNDER_HOST=127.0.0.1 -e THUNDER_PORT="$port" \
  "$IMAGE" serve)"
url="http://127.0.0.1:$port"
for _ in $(seq 1 60); do
  if curl -sf "$url/health" >/dev/null; then break; fi
  if [ "$(docker inspect -f '{{.State.Running}}' "$container")" != "true" ]; then
    docker logs "$container" >&2; log "the container exited"; exit 1
  fi
  sleep 0.5
done
curl -sf "$url/health" >/dev/null || { docker logs "$container" >&2; exit 1; }
echo "health: ok"
ready="$(curl -s -o /dev/null -w '%{http_code}' "$url/ready")"
echo "ready without engines: $ready"
[ "$ready" = 503 ]
curl -sf "$url/metrics" | grep -q '^thunder_build_info{' && echo "metrics: thunder_build_info"
curl -sf "$url/live" | grep -q '<title>Thunder scheduler: live</title>' && echo "live page: ok"
user="$(docker exec "$container" python -c 'import os; print(os.getuid())')"
echo "runs as uid $user"
[ "$user" = 65532 ]
docker rm -f "$container" >/dev/null
container=""
echo "image $IMAGE: smoke test passed"
