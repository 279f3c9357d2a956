#!/usr/bin/env bash
# bootstrap-base.sh: make the slim Debian base image the Switchback images build FROM,
# without any container registry.
#
#   deploy/docker/bootstrap-base.sh [--force]
#
# debootstrap (variant minbase) lays out a Debian bookworm root filesystem from the Debian
# mirror, the script trims it (docs, man pages, locales, apt lists: the official
# debian:bookworm-slim trims the same paths) and `docker import`s it as
# switchback/debian:bookworm-slim. The rootfs tarball is cached under
# $SWITCHBACK_CACHE/docker (default ~/.cache/switchback/docker), so re-importing after
# `docker image rm` or on a fresh engine takes seconds; an existing image is kept as is.
#
# What goes in beyond minbase (which already has libc6 and libgcc-s1): only what the
# binaries load at run time (see RUNTIME below; `ldd` on the binaries decides) and
# ca-certificates. apt stays, so images FROM it can `apt-get install` (the etcd image
# does).
#
# Env: SWITCHBACK_BASE_IMAGE (default switchback/debian:bookworm-slim),
#      SWITCHBACK_DEBIAN_MIRROR (default http://deb.debian.org/debian).
# Needs root (debootstrap chroots and creates device nodes) and a running Docker engine.
set -euo pipefail

image="${SWITCHBACK_BASE_IMAGE:-switchback/debian:bookworm-slim}"
mirror="${SWITCHBACK_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite=bookworm
cache="${SWITCHBACK_CACHE:-$HOME/.cache/switchback}/docker"
# `ldd` on the four binaries (CPU build): libc, libm and libgcc_s only, all in minbase
# already (mistral.rs/candle pull in no libstdc++, libgomp or OpenSSL). ca-certificates for
# https endpoints (etcd, OTLP) configured by users.
RUNTIME=(ca-certificates)
force=false

log() { printf 'bootstrap-base: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

case "${1:-}" in
  --force) force=true ;;
  "") ;;
  *) die "usage: $0 [--force]" ;;
esac

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (is dockerd running?)"

if ! $force && docker image inspect "$image" >/dev/null 2>&1; then
  log "$image exists; nothing to do (--force rebuilds it)"
  exit 0
fi

# The tarball's name carries what defines its content (this script, the mirror), so a
# changed package list or trimming makes a new one instead of reusing a stale cache.
key=$( { cat "$0"; echo "$mirror"; } | sha256sum | cut -c1-12)
tarball="$cache/debian-$suite-minbase-$key.tar.gz"

if $force || [[ ! -s $tarball ]]; then
  if ((EUID != 0)); then
    # debootstrap chroots and makes device nodes: do this part as root, keeping the
    # caller's cache (and its docker access for the import).
    command -v sudo >/dev/null || die "debootstrap needs root (or sudo)"
    log "debootstrap needs root: re-running under sudo"
    exec sudo SWITCHBACK_CACHE="${cache%/docker}" SWITCHBACK_BASE_IMAGE="$image" \
      SWITCHBACK_DEBIAN_MIRROR="$mirror" "$0" "$@"
  fi
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >&2
  fi
  mkdir -p "$cache"
  work=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  rootfs="$work/rootfs"
  log "debootstrap --variant=minbase $suite from $mirror (about a minute)"
  if ! debootstrap --variant=minbase --include="$(IFS=,; echo "${RUNTIME[*]}")" \
    "$suite" "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1; then
    tail -n 20 "$cache/debootstrap.log" >&2
    die "debootstrap failed; the whole log is $cache/debootstrap.log"
  fi

  log "trimming"
  # Keep later `apt-get install`s in images built FROM this one as slim (the same
  # excludes as the official slim images).
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
CFG
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'CFG'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
CFG
  # Package scripts must not try to start services in a container (as in the official
  # images).
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
  chmod 755 "$rootfs/usr/sbin/policy-rc.d"
  # Same sources as the host's Debian: the release, its updates and security fixes.
  cat >"$rootfs/etc/apt/sources.list" <<LIST
deb $mirror $suite main
deb $mirror $suite-updates main
deb ${mirror%/debian}/debian-security $suite-security main
LIST
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$rootfs"/usr/share/{man,info,locale,lintian}/* \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/root/.bash_history "$rootfs"/debootstrap
  # The engine manages these per container.
  : >"$rootfs/etc/hostname"
  : >"$rootfs/etc/resolv.conf"
  rm -f "$rootfs/etc/machine-id" && : >"$rootfs/etc/machine-id"

  log "packing $tarball"
  tar --numeric-owner --xattrs -C "$rootfs" -czf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  # Under sudo, leave the cache to the user who asked for it.
  [[ -z ${SUDO_UID:-} ]] || chown "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$cache" "$tarball"
  find "$cache" -maxdepth 1 -name "debian-$suite-minbase-*.tar.gz" -not -name "$(basename "$tarball")" -delete
else
  log "using the cached rootfs $tarball"
fi

log "docker import -> $image"
docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["bash"]' \
  --change "LABEL org.opencontainers.image.title=switchback-debian-base io.switchback.rootfs=$(basename "$tarball")" \
  --message "debootstrap --variant=minbase $suite" \
  "$tarball" "$image" >/dev/null
log "$image: $(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}')"
