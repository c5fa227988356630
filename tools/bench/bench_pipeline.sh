#!/usr/bin/env bash
# bench_pipeline: the tiny four-stage pipeline (configs/tests/tiny-pipeline.yaml) as one process and as an MPI
# job at 4 ranks (1g1s1l) and 6 ranks (2g1s2l), through tools/sweep (mpirun --oversubscribe locally).
# Prints training-loop tokens/s (step lines' tokens over step time; best of BENCH_REPEAT runs) and each
# layout's ratio to the single process. Usage: tools/bench/bench_pipeline.sh [BUILD_DIR]
set -u
build=${1:-${S2D_BUILD:-build}}
s2d=$build/s2d
batch=${BENCH_PIPELINE_BATCH:-16} steps=${BENCH_PIPELINE_STEPS:-4} repeat=${BENCH_REPEAT:-2}
[ -x "$s2d" ] || { echo "bench_pipeline: $s2d not built (make BUILD=$build)"; exit 1; }
out=$(mktemp -d "${TMPDIR:-/tmp}/s2d-bench-pipeline.XXXXXX")
trap 'rm -rf "$out"' EXIT
if ! tools/sweep --s2d "$s2d" --layouts single,1g1s1l,2g1s2l --batches "$batch" --steps "$steps" \
     --repeat "$repeat" --no-plot --out "$out" >"$out/sweep.stdout" 2>"$out/sweep.stderr"; then
  echo "bench_pipeline: sweep failed:"; tail -5 "$out/sweep.stderr"; exit 1
fi
echo "tiny pipeline, 4 stages x $steps steps, $batch prompts/step, $(nproc) cores, best of $repeat" \
     "(tokens/s over step time; OMP threads = cores / ranks)"
awk -F'\t' '
  NR == 1 { next }
  $1 == "single" { base = $4 }
  { lay[NR] = $1; rk[NR] = $3; tps[NR] = $4; st[NR] = $11; n = NR }
  END {
    for (i = 2; i <= n; i++) {
      if (st[i] != "ok") { printf "  %-8s %2d ranks  %s\n", lay[i], rk[i], st[i]; continue }
      ratio = (base > 0) ? sprintf("%.2fx single", tps[i] / base) : "-"
      printf "  %-8s %2d ranks  %10.1f tokens/s  %s\n", lay[i], rk[i], tps[i], ratio
    }
  }' "$out/sweep.tsv"
if grep -q "skipped: s2d has no MPI roles" "$out/sweep.tsv"; then
  echo "  note: this s2d has no MPI runtime (roles.* rejected): only the single-process number is measured"
fi
