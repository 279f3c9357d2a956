#!/usr/bin/env bash
# reproduce.sh: every number in docs/ROUTING.md, from the public data to the tables.
#
#   router-plane/lab/reproduce.sh [DATA_ROOT]    (default: ../shared/data/routing)
#
# Imports the datasets into labelled JSONL under $SWITCHBACK_CACHE/routing, trains the
# shipped predictor (deploy/routing/predictor.json, rewritten in place: it should come out
# byte-identical) and the strict in-domain ones, and prints every evaluation. Needs the
# built binaries and MiniLM with its distilled table (tests/run.sh or quickstart.sh make
# both). Takes about a minute.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
data=${1:-$root/../shared/data/routing}
export SWITCHBACK_CACHE="${SWITCHBACK_CACHE:-$HOME/.cache/switchback}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SWITCHBACK_CACHE/target}"
export SWITCHBACK_MINILM_DIR="${SWITCHBACK_MINILM_DIR:-$SWITCHBACK_CACHE/models/all-minilm-l6-v2}"
lab="$CARGO_TARGET_DIR/debug/switchback-lab"
out="$SWITCHBACK_CACHE/routing"
mkdir -p "$out"
[[ -x $lab ]] || { echo "build first: cargo build --workspace --bins" >&2; exit 1; }

for d in routellm-mmlu routellm-gsm8k routellm-mt-bench llmrouter routerarena; do
  "$lab" import "$d" --root "$data" --out "$out/$d.jsonl"
done

weak=mistralai/Mixtral-8x7B-Instruct-v0.1
strong=gpt-4-1106-preview
# The shipped predictor: MMLU + GSM8K, tier heads on train + calibration,
# knob on calibration.
"$lab" train --data "$out/routellm-mmlu.jsonl" --data "$out/routellm-gsm8k.jsonl" \
  --tier small=$weak --tier large=$strong --heads-on-calibration --out deploy/routing/predictor.json
for d in mmlu gsm8k; do
  echo "== shipped predictor, RouteLLM $d, test split"
  "$lab" eval --data "$out/routellm-$d.jsonl" --predictor deploy/routing/predictor.json \
    --plot "$out/$d.svg" --predictions "$out/$d-predictions.csv"
done
echo "== shipped predictor, MT-Bench (evaluation only: never trained on)"
"$lab" eval --data "$out/routellm-mt-bench.jsonl" --predictor deploy/routing/predictor.json \
  --split all --plot "$out/mt-bench.svg" --predictions "$out/mt-bench-predictions.csv"

# Strict in-domain predictors: heads on train only, one per benchmark, per encoder.
# The same with a head on the gain itself (--gap-head): preferred on the calibration split,
# worse on test and on MT-Bench, so not shipped.
"$lab" train --data "$out/routellm-mmlu.jsonl" --data "$out/routellm-gsm8k.jsonl" \
  --tier small=$weak --tier large=$strong --heads-on-calibration --gap-head --out "$out/gap-head.json"
for d in mmlu gsm8k; do
  echo "== gap head variant, RouteLLM $d, test split"
  "$lab" eval --data "$out/routellm-$d.jsonl" --predictor "$out/gap-head.json"
done
echo "== gap head variant, MT-Bench"
"$lab" eval --data "$out/routellm-mt-bench.jsonl" --predictor "$out/gap-head.json" --split all

for d in mmlu gsm8k; do
  for enc in lexical static; do
    "$lab" train --data "$out/routellm-$d.jsonl" --tier small=$weak --tier large=$strong \
      --encoder $enc --out "$out/$d-$enc.json"
    echo "== strict in-domain, $enc features, RouteLLM $d, test split"
    "$lab" eval --data "$out/routellm-$d.jsonl" --predictor "$out/$d-$enc.json" --encoder $enc
  done
done
# LLMRouter's open models: a pair chosen before looking at test, as the best model of at
# most 9B against the best overall on the train split (54.5 % against 60.5 %), priced
# 0.2 against 0.9 per million tokens. (RouterArena has no pair worth routing: its cheapest
# strong model, gemini-2.0-flash, is also its best, 69.0 % against claude-3-haiku's 52.3 %
# at a quarter of the price per answer, so a router can only lose there.)
"$lab" train --data "$out/llmrouter.jsonl" --tier small=llama-3.1-8b-instruct \
  --tier large=llama-3.1-nemotron-51b-instruct --heads-on-calibration --out "$out/llmrouter-pair.json"
echo "== LLMRouter pair (llama-3.1-8b vs nemotron-51b), test split"
"$lab" eval --data "$out/llmrouter.jsonl" --predictor "$out/llmrouter-pair.json" \
  --plot "$out/llmrouter-pair.svg" --predictions "$out/llmrouter-pair-predictions.csv"

# The quickstart tiers' own labels (`label`, see docs/ROUTING.md "Labels from your own
# tiers"): SmolLM2-135M (`small`) against Qwen2.5-Coder-0.5B (`medium`).
# 1. LLMRouter's CommonsenseQA, OpenBookQA and ARC-Challenge questions, letter-scored: both
#    tiers near chance, so no routing signal (written to $out only).
"$lab" train --data deploy/routing/labels/choice-quickstart.jsonl --tier small=small \
  --tier medium=medium --heads-on-calibration --out "$out/quickstart-choice.json"
echo "== quickstart tiers, multiple choice (CommonsenseQA, OpenBookQA, ARC-Challenge), test split"
"$lab" eval --data deploy/routing/labels/choice-quickstart.jsonl \
  --predictor "$out/quickstart-choice.json"
# 2. LLMRouter's MBPP and HumanEval problems, graded by running the code: only train +
#    calibration items were labelled (`label --split train --split calibration`), so the
#    predictor trained on them is judged by k-fold over the labelled items, and the
#    RouteLLM-trained predictor (which never saw them) on all of them.
"$lab" train --data deploy/routing/labels/code-quickstart.jsonl --tier small=small \
  --tier medium=medium --heads-on-calibration --out "$out/quickstart-code.json"
echo "== quickstart tiers, code: k-fold over the labelled items"
"$lab" learning-curve --data deploy/routing/labels/code-quickstart.jsonl --tier small=small \
  --tier medium=medium --sizes 20,40,60,75 --folds 5 --repeats 5
echo "== the same items routed by the RouteLLM-trained predictor (Mixtral/GPT-4 outcomes)"
"$lab" eval --data deploy/routing/labels/code-quickstart.jsonl --split all \
  --predictor deploy/routing/predictor.json --tier small=small --tier large=medium \
  --plot "$out/quickstart-code.svg"
echo "== cascade floors from the code labels' confidences"
"$lab" fit-cascade --data deploy/routing/labels/code-quickstart.jsonl --tier small \
  --tier medium --quality 0.95

# The three tiers' own labels (router-plane/lab/label-own-tiers.sh, docs/ROUTING.md "Routing
# learned from your own tiers"): a head per tier, evaluated over all three with the
# quickstart's prices, and the cascade floors on each signal the router can judge.
own=(deploy/routing/labels/own-*.jsonl)
if [[ -e ${own[0]} ]]; then
  data=()
  for f in "${own[@]}"; do data+=(--data "$f"); done
  "$lab" train "${data[@]}" --tier small=small --tier medium=medium --tier large=large \
    --knob-on-train --knob-z 1.645 --out "$out/own-tiers.json"
  echo "== the quickstart's three tiers, their own labels, test split"
  "$lab" eval "${data[@]}" --predictor "$out/own-tiers.json" \
    --price small=0.02/0.04 --price medium=0.075/0.15 --price large=0.22/0.44 \
    --ladder-plot "$out/own-tiers-ladder.svg" --plot "$out/own-tiers.svg" \
    --predictions "$out/own-tiers-predictions.csv"
  echo "== medium vs large: APGR as the number of labels grows (k-fold, all items)"
  "$lab" learning-curve "${data[@]}" --tier medium=medium --tier large=large \
    --sizes 100,250,500,1000,2000
  for signal in confidence margin; do
    echo "== cascade floors on $signal"
    "$lab" fit-cascade "${data[@]}" --tier small --tier medium --tier large --signal "$signal" \
      > "$out/own-floors-$signal.yaml"
    cat "$out/own-floors-$signal.yaml"
  done
  echo "== the knob fitted for cascade routing with the margin floors, test split"
  "$lab" train "${data[@]}" --tier small=small --tier medium=medium --tier large=large \
    --knob-on-train --knob-z 1.645 --cascade "$out/own-floors-margin.yaml" \
    --out "$out/own-tiers-cascade.json"
  "$lab" eval "${data[@]}" --predictor "$out/own-tiers-cascade.json" \
    --price small=0.02/0.04 --price medium=0.075/0.15 --price large=0.22/0.44 | grep knob
  if [[ -e deploy/routing/labels/own-code.jsonl ]]; then
    echo "== code only: medium vs large as the number of code labels grows"
    "$lab" learning-curve --data deploy/routing/labels/own-code.jsonl --tier medium=medium \
      --tier large=large --sizes 50,100,150
  fi
fi
echo "plots and per-item predictions: $out"
