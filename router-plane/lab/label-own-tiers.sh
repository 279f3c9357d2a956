#!/usr/bin/env bash
# label-own-tiers.sh: label the quickstart's three tiers (small SmolLM2-135M, medium
# Qwen2.5-Coder-0.5B, large Qwen2.5-Coder-1.5B) on public questions, for `train`, `eval`
# and `fit-cascade` (docs/ROUTING.md, "Routing learned from your own tiers").
#
#   router-plane/lab/label-own-tiers.sh [DATA_ROOT]   (default: ../shared/data/routing)
#
# Needs the quickstart cluster with all three workers (deploy/local/quickstart.sh). Starts
# the batch router of deploy/local/config/router-label.yaml on :8081 when it is not up (a
# first-token wait of ten minutes: a CPU worker behind a queue of prefills is slow, not
# hung). Writes deploy/routing/labels/own-*.jsonl, one row per question with every tier's
# score, answer text, confidence signals and seconds. Resumable: each file is appended as
# questions finish, and a rerun asks only what is missing, so stop it at any time.
#
# Multiple choice first (one prefill per question and tier, letter-scored), then code
# (MBPP and HumanEval, graded by running the answer: do that in a throwaway machine),
# then GSM8K, only when LABEL_LIMIT_GSM8K is set: its reasoned answers need a budget of
# LABEL_GSM8K_TOKENS (default 512) tokens, minutes per question on a CPU (docs/ROUTING.md,
# "Labelling"). LABEL_LIMIT_{MMLU,CHOICE,CODE,GSM8K} resize.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
data=${1:-$root/../shared/data/routing}
export SWITCHBACK_CACHE="${SWITCHBACK_CACHE:-$HOME/.cache/switchback}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SWITCHBACK_CACHE/target}"
bin="$CARGO_TARGET_DIR/debug"
labels="$root/deploy/routing/labels"
router=http://127.0.0.1:8081
for b in switchback-router switchback-lab; do
  [[ -x $bin/$b ]] || { echo "build first: deploy/local/quickstart.sh" >&2; exit 1; }
done

if ! curl -fsS "$router/readyz" >/dev/null 2>&1; then
  mkdir -p "$root/.run/logs"
  setsid "$bin/switchback-router" --config deploy/local/config/router-label.yaml \
    >>"$root/.run/logs/router-label.log" 2>&1 < /dev/null &
  echo $! > "$root/.run/router-label.pid"
  for _ in $(seq 1 120); do
    curl -fsS "$router/readyz" >/dev/null 2>&1 && break
    sleep 0.5
  done
  curl -fsS "$router/readyz" >/dev/null || { echo "the batch router did not become ready (.run/logs/router-label.log)" >&2; exit 1; }
fi

label() {
  "$bin/switchback-lab" label "$@" --root "$data" --router "$router" \
    --tier small --tier medium --tier large --concurrency 3 --tries 8
}
label mmlu --limit "${LABEL_LIMIT_MMLU:-1600}" --max-prompt-chars 700 --out "$labels/own-mmlu.jsonl"
label llmrouter-choice --limit "${LABEL_LIMIT_CHOICE:-900}" --max-prompt-chars 700 \
  --out "$labels/own-choice.jsonl"
label llmrouter-code --limit "${LABEL_LIMIT_CODE:-300}" --max-prompt-chars 1500 \
  --out "$labels/own-code.jsonl"
if [[ ${LABEL_LIMIT_GSM8K:-0} -gt 0 ]]; then
  label gsm8k --limit "$LABEL_LIMIT_GSM8K" --max-tokens "${LABEL_GSM8K_TOKENS:-512}" \
    --out "$labels/own-gsm8k.jsonl"
fi
