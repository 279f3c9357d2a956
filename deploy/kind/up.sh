#!/usr/bin/env bash
# deploy/kind/up.sh: a Switchback cluster on kind, from this checkout, ending in one real
# chat completion through the router.
#
#   deploy/kind/up.sh          # create (or reuse) the cluster, build, load, install, smoke test
#   deploy/kind/up.sh down     # delete the kind cluster
#
# Steps, each skipped when already done:
#   1. kind cluster `switchback` from deploy/kind/cluster.yaml (1 control plane, 2 workers);
#   2. images switchback/{controller,worker,router,etcd}:<version> from the host-built
#      binaries (deploy/docker/build-images.sh; run `cargo build --workspace --bins` first),
#      loaded into the kind nodes (`kind load docker-image`: no registry involved);
#   3. the chart helm/switchback with examples/cpu-sim-values.yaml (sim engines: no GPU, no
#      weights) and deploy/kind/values.yaml, through `helm upgrade --install --wait` when a
#      helm binary is on PATH, else the same through helm-python-sdk (deploy/kind/helm_install.py
#      in the venv of helm/tests/venv.sh);
#   4. waits for every rollout, port-forwards the router to 127.0.0.1:$SWITCHBACK_KIND_PORT
#      (default 18080) and sends one chat completion with curl.
#
# Needs docker, kind (v0.13+) and kubectl, and a kind node image kind can pull (or
# $KIND_NODE_IMAGE already loaded). This project's CI machine has no registry to pull that
# image from, so this script is not part of tests/run.sh; the Docker Compose cluster
# (deploy/compose.yaml) is the tested multi-node stand-in.
# Env: KIND_CLUSTER_NAME (switchback), KIND_NODE_IMAGE, SWITCHBACK_KIND_PORT (18080),
#      SWITCHBACK_CACHE, CARGO_TARGET_DIR / SWITCHBACK_BIN_DIR (see build-images.sh).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cluster="${KIND_CLUSTER_NAME:-switchback}"
context="kind-$cluster"
release=switchback
namespace=switchback
port="${SWITCHBACK_KIND_PORT:-18080}"
chart=helm/switchback
values=(helm/switchback/examples/cpu-sim-values.yaml deploy/kind/values.yaml)
tag=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'kind up: error: %s\n' "$*" >&2; exit 1; }
kc() { kubectl --context "$context" --namespace "$namespace" "$@"; }

for tool in docker kind kubectl curl; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done
[[ -n $tag ]] || die "cannot read the workspace version from Cargo.toml"

if [[ ${1:-} == down ]]; then
  kind delete cluster --name "$cluster"
  exit 0
fi
[[ $# -eq 0 ]] || die "usage: $0 [down]"

log "kind cluster $cluster"
if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  echo "exists; reusing it" >&2
else
  kind create cluster --name "$cluster" --config deploy/kind/cluster.yaml \
    ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 180s
fi

log "images switchback/*:$tag"
[[ -x deploy/docker/build-images.sh ]] || die "deploy/docker/build-images.sh is missing"
deploy/docker/build-images.sh --tag "$tag"
for component in controller worker router etcd; do
  # kind load compares image ids and skips nodes that already have this one.
  kind load docker-image --name "$cluster" "switchback/$component:$tag"
done

log "helm upgrade --install $release ($chart)"
set_args=(--set "image.tag=$tag")
if command -v helm >/dev/null; then
  helm upgrade --install "$release" "$chart" --kube-context "$context" --namespace "$namespace" \
    --create-namespace "${values[@]/#/--values=}" "${set_args[@]}" --wait --timeout 10m
else
  echo "no helm binary: installing through helm-python-sdk" >&2
  venv=$(helm/tests/venv.sh)
  "$venv/bin/python" deploy/kind/helm_install.py "$chart" "$release" --namespace "$namespace" \
    --kube-context "$context" "${values[@]/#/--values=}" "${set_args[@]}" --timeout 600
fi

log "rollouts"
for workload in $(kc get deployment,statefulset -l "app.kubernetes.io/instance=$release" -o name); do
  kc rollout status "$workload" --timeout=300s
done
kc get pods -o wide -l "app.kubernetes.io/instance=$release"

log "port-forward service/$release-router to 127.0.0.1:$port"
forward_log=$(mktemp)
kc port-forward "service/$release-router" "$port:8080" >"$forward_log" 2>&1 &
forward=$!
trap 'kill "$forward" 2>/dev/null || true; rm -f "$forward_log"' EXIT
ready=false
for _ in $(seq 60); do
  if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
    ready=true
    break
  fi
  kill -0 "$forward" 2>/dev/null || { cat "$forward_log" >&2; die "kubectl port-forward exited"; }
  sleep 1
done
$ready || { cat "$forward_log" >&2; die "the router did not answer /readyz within 60 s"; }

log "smoke test: one chat completion"
headers=$(mktemp)
body=$(curl -fsS --max-time 60 -D "$headers" "http://127.0.0.1:$port/v1/chat/completions" \
  -H 'content-type: application/json' \
  -d '{"model": "small", "messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 16}') ||
  { rm -f "$headers"; die "the chat completion failed"; }
tier=$(tr -d '\r' <"$headers" | sed -n 's/^x-switchback-tier: //Ip')
worker=$(tr -d '\r' <"$headers" | sed -n 's/^x-switchback-worker: //Ip')
rm -f "$headers"
grep -q '"choices"' <<<"$body" || die "unexpected answer: $body"
printf '%s\n' "$body"
echo "answered by tier ${tier:-?} on worker ${worker:-?}" >&2

cat >&2 <<EOF

Switchback runs on kind cluster $cluster (namespace $namespace). To use it:
  kubectl --context $context -n $namespace port-forward service/$release-router 8080:8080
  curl -s http://127.0.0.1:8080/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model": "auto", "messages": [{"role": "user", "content": "Hi"}]}'
Cluster status: kubectl --context $context -n $namespace exec deploy/$release-controller -- \\
    sbctl --etcd-endpoints http://$release-etcd-0.$release-etcd-headless.$namespace.svc:2379 status
Delete it all:  $0 down
EOF
