#!/usr/bin/env bash
# Start a private Docker daemon for the tool manager's tests and build its base image offline.
#
# - Installs Debian's docker.io (dockerd 20.10) and busybox-static with apt-get if missing (root).
# - Starts dockerd on a private socket under $THUNDER_DOCKER_DIR (default /tmp/thunder-docker):
#   --data-root, --exec-root and --pidfile all live there, so it never touches a system daemon.
#   overlay2 storage and the default bridge work on the project's machines (measured); set
#   THUNDER_DOCKER_FLAGS (e.g. "--storage-driver=vfs --iptables=false --bridge=none") elsewhere.
# - Builds `thunder-base:latest` without a registry: a busybox-static rootfs (2 MB, ~1 s; the
#   debootstrap alternative takes about a minute and CI has 90 minutes in all), cached as a
#   tarball in ~/.cache/thunder so reruns only `docker import` it.
# - Idempotent: reuses a daemon that already answers on the socket.
# Prints shell assignments on stdout:
#   DOCKER_HOST=unix://...
#   THUNDER_DOCKER_STARTED=1|0   (1: this run started the daemon; stop it with its pidfile)
#   THUNDER_DOCKER_PIDFILE=...
set -euo pipefail

DIR="${THUNDER_DOCKER_DIR:-/tmp/thunder-docker}"
SOCK="$DIR/docker.sock"
CACHE_ROOT="${THUNDER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/thunder}"
ROOTFS_TAR="$CACHE_ROOT/thunder-base-busybox.tar"
IMAGE="${THUNDER_BASE_IMAGE:-thunder-base:latest}"

log() { echo "[setup_docker] $*" >&2; }

ping_daemon() { curl -sf --max-time 2 --unix-socket "$SOCK" http://docker/_ping >/dev/null 2>&1; }

if ! command -v dockerd >/dev/null || ! [ -x /bin/busybox ] || ! command -v curl >/dev/null; then
  if [ "$(id -u)" != 0 ]; then log "docker.io is missing and we are not root"; exit 1; fi
  log "installing docker.io busybox-static with apt-get"
  apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    --no-install-recommends docker.io busybox-static curl >&2
fi
DOCKER_CLI="$(command -v docker)"

mkdir -p "$DIR" "$CACHE_ROOT"
STARTED=0
if ping_daemon; then
  log "reusing the daemon on $SOCK"
else
  if [ -f "$DIR/pid" ] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null; then
    log "a dockerd (pid $(cat "$DIR/pid")) holds $DIR but does not answer; waiting for it"
  else
    rm -f "$SOCK" "$DIR/pid"
    log "starting dockerd on $SOCK (log: $DIR/dockerd.log)"
    # shellcheck disable=SC2086
    setsid dockerd --host "unix://$SOCK" --data-root "$DIR/data" --exec-root "$DIR/exec" \
      --pidfile "$DIR/pid" ${THUNDER_DOCKER_FLAGS:-} </dev/null >"$DIR/dockerd.log" 2>&1 &
    STARTED=1
  fi
  for _ in $(seq 1 120); do ping_daemon && break; sleep 0.5; done
  if ! ping_daemon; then
    log "dockerd did not answer within 60 s; last log lines:"; tail -n 30 "$DIR/dockerd.log" >&2
    exit 1
  fi
fi

export DOCKER_HOST="unix://$SOCK"
if ! "$DOCKER_CLI" image inspect "$IMAGE" >/dev/null 2>&1; then
  if [ ! -s "$ROOTFS_TAR" ]; then
    log "building the busybox rootfs into $ROOTFS_TAR"
    root="$(mktemp -d)"
    trap 'rm -rf "$root"' EXIT
    mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/root" "$root/work" "$root/proc" \
      "$root/sys" "$root/dev"
    cp /bin/busybox "$root/bin/busybox"
    for applet in $(/bin/busybox --list); do
      [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done
    chmod 1777 "$root/tmp"
    echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
    echo 'root:x:0:' >"$root/etc/group"
    tar -C "$root" -cf "$ROOTFS_TAR.tmp" . && mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
  fi
  log "importing $IMAGE"
  "$DOCKER_CLI" import -c 'CMD ["/bin/sh"]' \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$ROOTFS_TAR" "$IMAGE" >&2
fi

echo "DOCKER_HOST=unix://$SOCK"
echo "THUNDER_DOCKER_STARTED=$STARTED"
echo "THUNDER_DOCKER_PIDFILE=$DIR/pid"
