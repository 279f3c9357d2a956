#!/usr/bin/env bash
# quickstart.sh: set up everything and run a local Switchback cluster.
#
#   deploy/local/quickstart.sh          install what is missing, build, start the cluster
#   deploy/local/quickstart.sh stop     stop it
#   deploy/local/quickstart.sh status   show what runs
#
# The cluster: etcd (data in .run/etcd), two controllers (leader + warm standby), three
# workers with real mistral.rs inference on CPU — `small` (SmolLM2-135M), `medium`
# (Qwen2.5-Coder-0.5B) and `large` (Qwen2.5-Coder-1.5B) — and the router on
# http://127.0.0.1:8080/v1. Logs are in .run/logs/. Each step skips what is done.
#
# SWITCHBACK_QUICKSTART_TIERS picks the workers (default "small medium large"); a machine
# without ~2.5 GB to spare for the three models starts two with "small medium". The router
# still lists all three tiers: requests pinned to a tier with no worker get a 503 saying so.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export SWITCHBACK_CACHE="${SWITCHBACK_CACHE:-$HOME/.cache/switchback}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SWITCHBACK_CACHE/target}"
run="$root/.run"
bin="$CARGO_TARGET_DIR/debug"
models="$SWITCHBACK_CACHE/models"
step() { printf '==> %s\n' "$*" >&2; }
die() { printf 'quickstart: error: %s\n' "$*" >&2; exit 1; }

stop() {
  local pidfile name pid
  for name in router worker-large worker-medium worker-small controller-b controller etcd; do
    pidfile="$run/$name.pid"
    [[ -f $pidfile ]] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      step "stopping $name ($pid)"
      kill -TERM "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$pidfile"
  done
}

status() {
  local name pidfile
  for name in etcd controller controller-b worker-small worker-medium worker-large router; do
    pidfile="$run/$name.pid"
    if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      printf '%-13s running (pid %s)\n' "$name" "$(cat "$pidfile")"
    else
      printf '%-13s stopped\n' "$name"
    fi
  done
}

# start NAME COMMAND...: runs it in its own session, logging to .run/logs/NAME.log.
start() {
  local name=$1
  shift
  local pidfile="$run/$name.pid"
  if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    step "$name already running"
    return
  fi
  step "starting $name"
  setsid "$@" >"$run/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
}

# wait_until WHAT SECONDS COMMAND...: polls COMMAND until it succeeds, or fails loudly.
wait_until() {
  local what=$1 seconds=$2
  shift 2
  for _ in $(seq 1 $((seconds * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  die "$what did not happen within ${seconds}s; see $run/logs/"
}

case "${1:-up}" in
  stop) stop; exit 0 ;;
  status) status; exit 0 ;;
  up) ;;
  *) die "usage: $0 [up|stop|status]" ;;
esac

read -r -a tiers <<<"${SWITCHBACK_QUICKSTART_TIERS:-small medium large}"
for t in "${tiers[@]}"; do
  [[ $t == small || $t == medium || $t == large ]] ||
    die "SWITCHBACK_QUICKSTART_TIERS: unknown tier '$t' (small, medium, large)"
done

step "dependencies"
deploy/local/ensure-deps.sh >/dev/null
deploy/local/fetch-models.sh "${tiers[@]}" minilm >/dev/null
step "building (the first build of mistral.rs takes a while)"
cargo build --workspace --bins --locked
# The difficulty predictor's embedding table, distilled once from MiniLM (~30 s).
export SWITCHBACK_MINILM_DIR="$models/all-minilm-l6-v2"
if [[ ! -f $SWITCHBACK_MINILM_DIR/static-table.bin ]]; then
  step "distilling the MiniLM static table for difficulty routing"
  "$bin/switchback-lab" distill --minilm-dir "$SWITCHBACK_MINILM_DIR"
fi

mkdir -p "$run/logs" "$run/etcd"
export RUST_LOG="${RUST_LOG:-info}"
start etcd etcd --name switchback-local --data-dir "$run/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster switchback-local=http://127.0.0.1:2380
wait_until "etcd ready" 30 etcdctl --endpoints=http://127.0.0.1:2379 endpoint health
start controller "$bin/switchback-controller" --config deploy/local/config/controller.yaml
# A second replica: it campaigns too, mirrors the leader's view and takes over on failure.
start controller-b "$bin/switchback-controller" --config deploy/local/config/controller.yaml \
  --id controller-b --listen 127.0.0.1:50051 --metrics-listen 127.0.0.1:9091
# model_file TIER: the GGUF of the tier's model (deploy/local/fetch-models.sh).
model_file() {
  case $1 in
    small) echo "$models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf" ;;
    medium) echo "$models/qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf" ;;
    large) echo "$models/qwen2.5-coder-1.5b/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf" ;;
  esac
}
model_id() {
  case $1 in
    small) echo smollm2-135m ;;
    medium) echo qwen2.5-coder-0.5b ;;
    large) echo qwen2.5-coder-1.5b ;;
  esac
}
for t in "${tiers[@]}"; do
  start "worker-$t" env SWITCHBACK_MODEL_PATH="$(model_file "$t")" \
    "$bin/switchback-worker" --config "deploy/local/config/worker-$t.yaml"
done
start router "$bin/switchback-router" --config deploy/local/config/router.yaml
wait_until "router ready" 60 curl -fsS http://127.0.0.1:8080/readyz
has_model() { curl -fsS http://127.0.0.1:8080/v1/models | grep -q "\"$1\""; }
for t in "${tiers[@]}"; do
  wait_until "$t worker registered" 180 has_model "$(model_id "$t")"
done

cat <<'MSG'

Switchback is running: OpenAI-compatible API at http://127.0.0.1:8080/v1
  (logs: .run/logs/, stop: deploy/local/quickstart.sh stop)

Try it:
  curl -s http://127.0.0.1:8080/v1/chat/completions -H 'content-type: application/json' \
    -d '{"model": "auto", "messages": [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}], "max_tokens": 32}'

  model: "auto" (the tier the difficulty predictor picks), "small", "medium", "large",
  or a model id from /v1/models.
MSG
printf '\nOperate it:\n  %s status            (tiers, workers, health and why; --json)\n  %s drain <worker>    (and undrain)\n' \
  "$bin/sbctl" "$bin/sbctl"
