#!/usr/bin/env bash
# tests/gpu/run.sh: every GPU test and the GPU benchmark, in one run (target: under 6 minutes on an H100/H200).
#   1. build with CUDA=1 (BUILD, default build-cuda: never mixed with the CPU build's objects)
#   2. cuda_selftest (the CUDA ops against fp64 references and the CPU's loss / sampler code, needing no CPU
#      backend) and the backend-parity test (test_backend_ops: every op of every compiled backend vs the CPU)
#   3. the HF parity fixtures, greedy generation and the AdamW parity test with --device cuda (fp32 mode)
#   4. benchmarks: s2d (bench_train with S2D_DEVICE=cuda) and the PyTorch + transformers peer
#      (tools/bench/bench_gpu.py) on qwen3-0.6b / qwen3-1.7b shapes
# Logs go under $OUT (default /tmp/s2d-gpu): one file per step plus summary.txt. This script only runs things
# and reports their exit status and output; it computes no result of its own. Exit status: 0 when every step
# passed, 1 when one failed, 77 when no GPU is visible (nothing was run).
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/s2d-gpu}
BUILD=${BUILD:-build-cuda}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$OUT"
summary="$OUT/summary.txt"
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  note "gpu: no GPU visible (nvidia-smi); nothing run"
  exit 77
fi
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
note "gpu: $(nvidia-smi -L | head -1)"
note "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)  date: $(date -u +%FT%TZ)"

failed=0
# step NAME TIMEOUT_S CMD...: runs CMD with its output in $OUT/NAME.log; records rc and seconds.
step() {
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  local res; res=$(grep '^RESULT ' "$OUT/$name.log" | tail -1)
  if [ $rc -eq 0 ]; then
    note "$(printf '%-28s ok      %4ds  %s' "$name" $((SECONDS - t0)) "$res")"
  else
    failed=1
    note "$(printf '%-28s FAILED  %4ds  rc=%d %s' "$name" $((SECONDS - t0)) $rc "$res")"
    tail -20 "$OUT/$name.log" | sed 's/^/    | /' | tee -a "$summary"
  fi
  return $rc
}

# 1. build (the sanitizer test binaries link the CUDA objects too)
# The self-test first, on its own: it needs only cuda/ and a few files of src/, so it runs even when the rest
# does not build.
# SKIP_BUILD=1 uses binaries built elsewhere and carried here (a GPU machine without nvcc); put the CUDA
# libraries on LD_LIBRARY_PATH if they are not in the rpath's /usr/local/cuda/lib64.
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  step build_selftest 600 make -j"$JOBS" BUILD="$BUILD" "$BUILD/tests/gpu/cuda_selftest"
fi
step cuda_selftest 240 "$BUILD/tests/gpu/cuda_selftest"
if [ "${SKIP_BUILD:-0}" != 1 ] && ! step build 900 make -j"$JOBS" CUDA=1 BUILD="$BUILD" "$BUILD/s2d" "$BUILD/tests/test_backend_ops" \
     "$BUILD/tests/test_parity" "$BUILD/tests/test_generate" "$BUILD/tests/test_adamw_parity" \
     "$BUILD/tools/bench_train"; then
  note "gpu: the build failed; see $OUT/build.log"
  exit 1
fi
step devices 60 "$BUILD/s2d" devices

# ASan and the CUDA runtime: CUDA maps memory where ASan keeps its shadow gap; leak checks see driver caches.
export ASAN_OPTIONS=${ASAN_OPTIONS:-protect_shadow_gap=0:detect_leaks=0:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export S2D_ROOT="$PWD" S2D="$PWD/$BUILD/s2d"

# 2. backend parity: every op, cuda vs cpu, fp32 and bf16 tolerances, forward and backward
step backend_ops 240 "$BUILD/tests/test_backend_ops"

# 3. model-level parity on the GPU (fp32 mode)
# S2D_DEVICE makes the process's default queue (ops_default) the GPU: models, workspaces and caches go there
step hf_parity_cuda 180 env S2D_DEVICE=cuda "$BUILD/tests/test_parity"
step generate_cuda 120 env S2D_DEVICE=cuda "$BUILD/tests/test_generate"
step adamw_parity_cuda 60 env S2D_DEVICE=cuda "$BUILD/tests/test_adamw_parity"
step logprobs_cuda 60 bash -c "'$BUILD/s2d' logprobs --model tests/fixtures/parity/qwen3_tied --device cuda < /dev/null"

# 4. benchmarks: s2d first, then the PyTorch peer on the same shapes and batch
export S2D_DEVICE=cuda
for preset in qwen3-0.6b qwen3-1.7b; do
  step "bench_train_$preset" 180 "$BUILD/tools/bench_train" "$preset" 8 1024 3
done
if python3 -c 'import torch, transformers' 2>/dev/null; then
  step bench_torch 300 python3 tools/bench/bench_gpu.py --models qwen3-0.6b qwen3-1.7b --seqs 8 --seq-len 1024
else
  note "bench_torch: torch / transformers not importable here: PyTorch peer not run"
fi

note ""
note "logs: $OUT"
[ $failed -eq 0 ] && note "gpu: all steps passed" || note "gpu: some steps FAILED"
exit $failed
