#!/usr/bin/env bash
# build-images.sh: build the Switchback container images from the host-built binaries,
# with no container registry.
#
#   deploy/docker/build-images.sh [--tag T] [--check]
#
# Makes the base image if it is missing (bootstrap-base.sh), stages the binaries into a
# build context and builds switchback/{controller,worker,router,lab,etcd}:T and :dev from
# deploy/Dockerfile and deploy/docker/etcd.Dockerfile. T defaults to the workspace version
# in Cargo.toml. Each image carries a label with the hash of its inputs (binaries,
# Dockerfile, base image); an image whose label matches is not rebuilt, so re-running after
# an unchanged build takes seconds.
#
# --check: build nothing; exit 1 naming each image that is missing or older than the
# binaries (the compose end-to-end test uses it).
#
# Binaries come from $SWITCHBACK_BIN_DIR, default $CARGO_TARGET_DIR/debug
# ($SWITCHBACK_CACHE/target/debug): run `cargo build --workspace --bins` first.
# Env: SWITCHBACK_BASE_IMAGE (the Dockerfile's BASE), SWITCHBACK_CACHE.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
export SWITCHBACK_CACHE="${SWITCHBACK_CACHE:-$HOME/.cache/switchback}"
target_dir="${CARGO_TARGET_DIR:-$SWITCHBACK_CACHE/target}"
bin_dir="${SWITCHBACK_BIN_DIR:-$target_dir/debug}"
base="${SWITCHBACK_BASE_IMAGE:-switchback/debian:bookworm-slim}"
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml")
tag="$version"
check=false
label=io.switchback.inputs

log() { printf 'build-images: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

while (($#)); do
  case $1 in
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --check) check=true; shift ;;
    *) die "usage: $0 [--tag T] [--check]" ;;
  esac
done
[[ -n $version ]] || die "cannot read the workspace version from Cargo.toml"

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (is dockerd running?)"

# image:component -> the binaries it holds (the controller image carries sbctl too).
declare -A binaries=(
  [controller]="switchback-controller sbctl"
  [worker]="switchback-worker"
  [router]="switchback-router"
  [lab]="switchback-lab"
)
for b in switchback-controller sbctl switchback-worker switchback-router switchback-lab; do
  [[ -x $bin_dir/$b ]] || die "$bin_dir/$b is missing: run \`cargo build --workspace --bins\` first"
done

if $check; then
  docker image inspect "$base" >/dev/null 2>&1 || die "the base image $base is missing"
else
  "$root/deploy/docker/bootstrap-base.sh"
fi
base_id=$(docker image inspect -f '{{.Id}}' "$base")

# inputs_hash FILE...: one hash over the base image and the files, in order.
inputs_hash() { { echo "$base_id"; sha256sum "$@" | cut -d' ' -f1; } | sha256sum | cut -c1-32; }
current_hash() { docker image inspect -f "{{index .Config.Labels \"$label\"}}" "$1" 2>/dev/null || true; }

stale=()
declare -A wanted
for c in controller worker router lab; do
  files=("$root/deploy/Dockerfile" "$root/deploy/docker/healthcheck")
  for b in ${binaries[$c]}; do files+=("$bin_dir/$b"); done
  wanted[$c]=$(inputs_hash "${files[@]}")
done
wanted[etcd]=$(inputs_hash "$root/deploy/docker/etcd.Dockerfile")
for c in controller worker router lab etcd; do
  for t in "$tag" dev; do
    [[ $(current_hash "switchback/$c:$t") == "${wanted[$c]}" ]] || { stale+=("$c"); break; }
  done
done

if $check; then
  if ((${#stale[@]})); then
    for c in "${stale[@]}"; do log "switchback/$c:$tag or :dev is missing or older than its inputs"; done
    die "run deploy/docker/build-images.sh"
  fi
  log "images are up to date with $bin_dir"
  exit 0
fi

if ((${#stale[@]} == 0)); then
  log "switchback/{controller,worker,router,lab,etcd}:$tag and :dev are up to date"
  exit 0
fi

context=""
cleanup() { [[ -z $context ]] || rm -rf "$context"; }
trap cleanup EXIT
for c in "${stale[@]}"; do
  started=$SECONDS
  old=$(docker image inspect -f '{{.Id}}' "switchback/$c:$tag" 2>/dev/null || true)
  if [[ $c == etcd ]]; then
    log "building switchback/etcd:$tag (apt-get install etcd-server from the Debian mirror)"
    docker build -q --build-arg BASE="$base" --label "$label=${wanted[$c]}" \
      -t "switchback/etcd:$tag" -t switchback/etcd:dev \
      -f "$root/deploy/docker/etcd.Dockerfile" "$root/deploy/docker" >/dev/null
  else
    if [[ -z $context ]]; then
      # Hard links when the cache and the target dir share a file system: no copy of the
      # (large) binaries.
      mkdir -p "$SWITCHBACK_CACHE/docker"
      context=$(mktemp -d "$SWITCHBACK_CACHE/docker/context.XXXXXX")
      mkdir "$context/bin"
      for b in switchback-controller sbctl switchback-worker switchback-router switchback-lab; do
        ln "$bin_dir/$b" "$context/bin/$b" 2>/dev/null || cp "$bin_dir/$b" "$context/bin/$b"
      done
      cp "$root/deploy/docker/healthcheck" "$context/bin/switchback-healthcheck"
    fi
    log "building switchback/$c:$tag"
    docker build -q --build-arg BASE="$base" --label "$label=${wanted[$c]}" --target "$c" \
      -t "switchback/$c:$tag" -t "switchback/$c:dev" -f "$root/deploy/Dockerfile" "$context" >/dev/null
  fi
  log "switchback/$c:$tag built in $((SECONDS - started)) s"
  # The image it replaced, now untagged, would linger as <none>; a container may still
  # use it, in which case it stays.
  if [[ -n $old && $old != "$(docker image inspect -f '{{.Id}}' "switchback/$c:$tag")" ]] &&
    [[ -z $(docker image inspect -f '{{join .RepoTags ""}}' "$old" 2>/dev/null) ]]; then
    docker image rm "$old" >/dev/null 2>&1 || true
  fi
done
