#!/usr/bin/env bash
# fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]: builds every fuzz target and runs each for
# a bounded time on its committed seed corpus (default: SWITCHBACK_FUZZ_SECONDS or 25 s;
# all targets). tests/run.sh calls it; to fuzz longer: `fuzz/run.sh 3600 policy`.
#
# - Toolchain: cargo fuzz needs nightly compiler flags. With a nightly toolchain installed
#   it builds with `cargo +nightly`; otherwise it uses the pinned toolchain with
#   RUSTC_BOOTSTRAP=1. cargo-fuzz itself is installed when missing.
# - Build: release, with debug assertions and overflow checks (-a: an overflow is a bug
#   to find, not a wrap), without a sanitizer (-s none: the code under test forbids
#   unsafe, so what there is to find is panics, aborts, timeouts and memory blow-ups;
#   ASan would only slow the build and the runs), in its own target dir
#   ($SWITCHBACK_CACHE/fuzz-target) so nightly artifacts never churn the main one.
# - Run: libFuzzer writes new inputs only to the first corpus directory, a scratch one
#   (fuzz/scratch/<target>, ignored by git); the committed corpus (fuzz/corpus/<target>)
#   is only read. Each run is bounded by -max_total_time, each input by -timeout and
#   -rss_limit_mb. A crash, timeout or OOM fails the script, naming the input that caused
#   it (kept under fuzz/artifacts/<target>/) and the command that replays it.
set -euo pipefail

fuzz_dir=$(cd "$(dirname "$0")" && pwd)
cd "$fuzz_dir"
seconds=${1:-${SWITCHBACK_FUZZ_SECONDS:-25}}
shift || true
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds < 1)); then
  echo "fuzz/run.sh: SECONDS_PER_TARGET must be a positive integer, got '$seconds'" >&2
  exit 64
fi
cache=${SWITCHBACK_CACHE:-$HOME/.cache/switchback}
target_dir=${SWITCHBACK_FUZZ_TARGET_DIR:-$cache/fuzz-target}
rss_limit_mb=${SWITCHBACK_FUZZ_RSS_MB:-2048}
input_timeout_s=${SWITCHBACK_FUZZ_INPUT_TIMEOUT_S:-10}

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  cargo=(cargo +nightly)
else
  echo "fuzz/run.sh: no nightly toolchain; using the pinned one with RUSTC_BOOTSTRAP=1" >&2
  export RUSTC_BOOTSTRAP=1
  cargo=(cargo)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz
fi

build_flags=(--release --debug-assertions --sanitizer none --codegen-units 16 --target-dir "$target_dir")
if (($# > 0)); then
  targets=("$@")
else
  mapfile -t targets < <("${cargo[@]}" fuzz list)
fi

start=$SECONDS
mkdir -p "$fuzz_dir/scratch"
if ! "${cargo[@]}" fuzz build "${build_flags[@]}" >"$fuzz_dir/scratch/build.log" 2>&1; then
  tail -n 40 "$fuzz_dir/scratch/build.log" >&2
  echo "fuzz/run.sh: the fuzz build failed (log: $fuzz_dir/scratch/build.log)" >&2
  exit 1
fi
echo "fuzz/run.sh: fuzz build took $((SECONDS - start)) s" >&2

failed=()
for t in "${targets[@]}"; do
  scratch="$fuzz_dir/scratch/$t"
  artifacts="$fuzz_dir/artifacts/$t"
  mkdir -p "$scratch" "$artifacts" "$fuzz_dir/corpus/$t"
  log="$fuzz_dir/scratch/$t.log"
  before=$(find "$artifacts" -type f | sort)
  status=0
  "${cargo[@]}" fuzz run "${build_flags[@]}" "$t" "$scratch" "$fuzz_dir/corpus/$t" -- \
    -max_total_time="$seconds" -timeout="$input_timeout_s" -rss_limit_mb="$rss_limit_mb" \
    -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 || status=$?
  stats=$(grep -aE '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 | sed -E 's/^#[0-9]+[[:space:]]+DONE[[:space:]]+//' || true)
  rate=$(grep -aE 'stat::average_exec_per_sec' "$log" | awk '{print $2}' || true)
  new=$(comm -13 <(echo "$before") <(find "$artifacts" -type f | sort) | grep -v '^$' || true)
  if ((status != 0)) || [[ -n $new ]]; then
    echo "FUZZ FAILURE in target $t (exit $status); log: $log" >&2
    grep -aE -A2 '^(thread .* panicked|==[0-9]+== ERROR|SUMMARY)' "$log" | head -n 5 >&2 || true
    tail -n 30 "$log" | cut -c1-300 >&2
    for input in $new; do
      echo "  crashing input: $input" >&2
      echo "  replay: (cd $fuzz_dir && ${cargo[*]} fuzz run ${build_flags[*]} $t $input)" >&2
    done
    failed+=("$t")
  else
    echo "fuzz $t: ${seconds} s, ${rate:-?} execs/s, ${stats:-no stats}" >&2
  fi
done

if ((${#failed[@]} > 0)); then
  echo "fuzz/run.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz/run.sh: ${#targets[@]} targets clean, $((SECONDS - start)) s in all" >&2
