#!/usr/bin/env bash
# The GPU checks, in one run on a machine with an NVIDIA GPU and driver
# (and NVRTC: the CUDA toolkit, or the nvidia-cuda-nvrtc-cu12 wheel's lib
# folder on LD_LIBRARY_PATH). Fails if no GPU answers. Writes the
# benchmark tables into ${OUT:-target/gpu-check}. The tests build in the dev
# profile (quick to compile on a fresh machine), the benchmark in release.
#   bash scripts/gpu-check.sh [VOXELS...]   (default 10^4 to 10^7)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-target/gpu-check}"
mkdir -p "$OUT"
export OSIPY_REQUIRE_GPU=1 OSIPY_REQUIRE_NVRTC=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt" || true
crates=$(for d in crates/*/tests/gpu.rs; do basename "$(dirname "$(dirname "$d")")"; done)
# shellcheck disable=SC2046
cargo test $(for c in $crates; do printf -- '-p %s --features %s/cuda ' "$c" "$c"; done) \
  --test gpu -- --nocapture 2>&1 | tee "$OUT/equivalence.log"
# The shared device suite (the GPU joins the CPU devices there).
cargo test -p osipy-fitting --features cuda --test devices -- --nocapture 2>&1 | tee -a "$OUT/equivalence.log"
cargo run --release -p xtask --features cuda -- gpu-bench --device cuda --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu-bench.log"
