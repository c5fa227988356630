#!/usr/bin/env bash
# Portable CPU paths (what `kernels: portable` studies run): the AVX2 decode products and attention and the 8-lane
# expf, against the plain loops whose bits they keep and OpenBLAS's sgemm on the same shapes, one thread.
# usage: tools/bench/bench_portable.sh BUILD_DIR
set -u
build=${1:-build}
bin=$build/tools/bench_portable
[ -x "$bin" ] || { echo "bench_portable: $bin not built (run make bench)"; exit 1; }
export OMP_NUM_THREADS=1 OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
grep -qw avx2 /proc/cpuinfo 2>/dev/null || unset OPENBLAS_CORETYPE
if command -v taskset >/dev/null && taskset -c 0 true 2>/dev/null; then taskset -c 0 "$bin"; else "$bin"; fi
