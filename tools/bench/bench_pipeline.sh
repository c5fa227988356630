#!/usr/bin/env bash
# bench_pipeline: the tiny four-stage pipeline (configs/tests/tiny-pipeline.yaml) as one process and as an MPI
# job at 4 ranks (1g1s1l) and 6 ranks (2g1s2l), through tools/sweep (mpirun --oversubscribe locally).
# Prints training-loop tokens/s (step lines' tokens over step time; best of BENCH_REPEAT runs) and each
# layout's ratio to the single process. The single process runs twice: with OMP threads = cores and with one
# thread (on a shared machine, spinning OpenMP threads can lose badly to other load); the ratio uses the
# faster of the two. Usage: tools/bench/bench_pipeline.sh [BUILD_DIR]
set -u
build=${1:-${S2D_BUILD:-build}}
s2d=$build/s2d
batch=${BENCH_PIPELINE_BATCH:-16} steps=${BENCH_PIPELINE_STEPS:-4} repeat=${BENCH_REPEAT:-2}
[ -x "$s2d" ] || { echo "bench_pipeline: $s2d not built (make BUILD=$build)"; exit 1; }
out=$(mktemp -d "${TMPDIR:-/tmp}/s2d-bench-pipeline.XXXXXX")
trap 'rm -rf "$out"' EXIT
sweep() { # OUTDIR ARGS...
  local d=$1; shift
  if ! tools/sweep --s2d "$s2d" --batches "$batch" --steps "$steps" --repeat "$repeat" --no-plot --out "$d" "$@" \
       >"$d.stdout" 2>"$d.stderr"; then
    echo "bench_pipeline: sweep failed:"; tail -5 "$d.stderr"; exit 1
  fi
}
sweep "$out/one" --layouts single --threads 1
sweep "$out/all" --layouts single,1g1s1l,2g1s2l
echo "tiny pipeline, 4 stages x $steps steps, $batch prompts/step, $(nproc) cores, best of $repeat" \
     "(tokens/s over step time; OMP threads = cores / ranks unless noted)"
awk -F'\t' -v cores="$(nproc)" '
  FNR == 1 { file++; next }
  file == 1 { one = $4; lay[0] = "single"; rk[0] = 1; tps[0] = $4; st[0] = $11; note[0] = "(1 thread)"; next }
  { n++; lay[n] = $1; rk[n] = $3; tps[n] = $4; st[n] = $11
    note[n] = ($1 == "single") ? "(" cores " threads)" : ""
    if ($1 == "single") all = $4 }
  END {
    base = (one > all) ? one : all
    for (i = 0; i <= n; i++) {
      if (st[i] != "ok") { printf "  %-8s %2d ranks  %s\n", lay[i], rk[i], st[i]; continue }
      ratio = (base > 0) ? sprintf("%.2fx single", tps[i] / base) : "-"
      printf "  %-8s %2d ranks  %10.1f tokens/s  %-14s %s\n", lay[i], rk[i], tps[i], ratio, note[i]
    }
  }' "$out/one/sweep.tsv" "$out/all/sweep.tsv"
if grep -q "skipped: s2d has no MPI roles" "$out/all/sweep.tsv"; then
  echo "  note: this s2d has no MPI runtime (roles.* rejected): only the single-process number is measured"
fi
