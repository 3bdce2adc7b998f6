#!/usr/bin/env bash
# The GPU checks, in one run on a machine with an NVIDIA GPU and driver,
# and NVRTC (the CUDA toolkit's libnvrtc.so, or the nvidia-cuda-nvrtc wheel's
# lib folder, on LD_LIBRARY_PATH). Fails if no GPU answers. Writes the logs
# and the benchmark tables into ${OUT:-target/gpu-check}.
#
#   bash scripts/gpu-check.sh build         # here: builds the checks into target/gpu-check-bin
#   bash scripts/gpu-check.sh [VOXELS...]   # there: runs them (default 10^4 to 10^7 voxels)
#
# The GPU machine needs no Rust toolchain and no network: build where cargo
# is, carry target/gpu-check-bin (stripped release binaries) and run.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/gpu-check-bin
crates=$(for d in crates/*/tests/gpu.rs; do basename "$(dirname "$(dirname "$d")")"; done)

if [ "${1:-}" = build ]; then
  rm -rf "$BIN" && mkdir -p "$BIN"
  # Every crate's tests/gpu.rs and the shared device suite, then gpu-bench.
  # shellcheck disable=SC2046
  cargo test --release --no-run --message-format=json \
    $(for c in $crates; do printf -- '-p %s --features %s/cuda ' "$c" "$c"; done) --test gpu \
    | python3 scripts/test-executables.py \
    | while read -r name exe; do cp "$exe" "$BIN/gpu-$name"; done
  cargo test --release --no-run -p osipy-fitting --features cuda --test devices --message-format=json \
    | python3 scripts/test-executables.py \
    | while read -r _ exe; do cp "$exe" "$BIN/devices"; done
  cargo build --release -p xtask --features cuda
  cp target/release/xtask "$BIN/xtask"
  strip "$BIN"/* 2>/dev/null || true
  ls -la "$BIN"
  du -sh "$BIN"
  exit 0
fi

OUT="${OUT:-target/gpu-check}"
mkdir -p "$OUT"
export OSIPY_REQUIRE_GPU=1 OSIPY_REQUIRE_NVRTC=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt" || true
# Every check runs even when one fails (a device run is short and
# precious); the script fails at the end if any did.
failed=0
if [ -d "$BIN" ]; then
  for t in "$BIN"/gpu-* "$BIN"/devices; do
    echo "== $t" | tee -a "$OUT/equivalence.log"
    "$t" --nocapture 2>&1 | tee -a "$OUT/equivalence.log" || failed=1
  done
  "$BIN"/xtask gpu-bench --device cuda --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu-bench.log" || failed=1
else
  # shellcheck disable=SC2046
  cargo test --no-fail-fast $(for c in $crates; do printf -- '-p %s --features %s/cuda ' "$c" "$c"; done) \
    --test gpu -- --nocapture 2>&1 | tee "$OUT/equivalence.log" || failed=1
  cargo test -p osipy-fitting --features cuda --test devices -- --nocapture 2>&1 | tee -a "$OUT/equivalence.log" || failed=1
  cargo run --release -p xtask --features cuda -- gpu-bench --device cuda --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu-bench.log" || failed=1
fi
exit "$failed"
