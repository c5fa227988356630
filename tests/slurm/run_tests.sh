#!/usr/bin/env bash
# The Slurm test: starts a private one-node cluster (tests/slurm/cluster.sh), submits slurm/s2d.sbatch with the
# tiny four-stage pipeline, waits (bounded), checks the job state, metrics and log, checks that bad jobs fail
# loudly, runs a two-point tools/sweep through sbatch, and always stops the daemons and removes its directory.
# With the MPI runtime present (`s2d train` accepts roles.*), the pipeline also runs as 4 ranks (1g1s1l) under
# srun --mpi=pmix. Needs $S2D and $S2D_ROOT (tests/run.sh sets them). Prints RESULT like tests/cli/lib.sh.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../cli/lib.sh"
. "$here/cluster.sh"
cd "$S2D_ROOT" || exit 1
trap 'slurm_cluster_stop; rm -rf "$WORK"' EXIT
trap 'exit 143' TERM INT

# 0. tools/sweep's table from hand-made metrics (no Slurm needed): throughput = sum(tokens) / sum(step time)
# with step time tokens/tokens_per_s, or gen_s+score_s+learn_s+sync_s without it; busy fractions weighted by
# step time, or each role's share of step time when the runtime writes none. Expected values by hand.
mkdir -p "$WORK/syn/1g1s1l-b4" "$WORK/syn/single-b4" "$WORK/syn/2g1s2l-b8" "$WORK/syn/3g1s2l-b4"
cat >"$WORK/syn/1g1s1l-b4/metrics.jsonl" <<'JSON'
{"stage": "a", "step": 0, "event": "eval", "accuracy": 0.5}
{"stage": "a", "algo": "grpo", "step": 1, "loss": 0.1, "tokens": 100, "tokens_per_s": 50, "busy_generators": 0.5, "busy_scorers": 0.25, "busy_learners": 0.1}
{"stage": "a", "algo": "grpo", "step": 2, "loss": 0.2, "tokens": 300, "tokens_per_s": 100, "busy_generators": 1.0, "busy_scorers": 0.5, "busy_learners": 0.6}
not json
JSON
cat >"$WORK/syn/single-b4/metrics.jsonl" <<'JSON'
{"stage": "a", "algo": "sft", "step": 1, "loss": 0.3, "tokens": 60, "gen_s": 1.0, "score_s": 0.5, "learn_s": 1.5}
{"stage": "a", "event": "labels", "labelled_total": 3}
JSON
printf '{"stage": "a", "step": 1, "loss": 0.3}\n' >"$WORK/syn/2g1s2l-b8/metrics.jsonl"
# step_s (wall per step) wins over tokens_per_s and the role times: 90 / 3 = 30
printf '{"stage": "a", "step": 1, "loss": 0.3, "tokens": 90, "step_s": 3, "tokens_per_s": 1000, "gen_s": 1}\n' \
  >"$WORK/syn/3g1s2l-b4/metrics.jsonl"
if tools/sweep --collect "$WORK/syn" --no-plot >"$WORK/syn.log" 2>&1; then
  fail "tools/sweep --collect: a run without step metrics must make it exit non-zero"
else
  ok
fi
check "synthetic: 1g1s1l throughput 400/(2+3) = 80, busy 0.8/0.4/0.4" \
  grep -qE "^1g1s1l	4	4	80\.0	0\.800	0\.400	0\.400	400	5\.000	" "$WORK/syn/sweep.tsv"
check "synthetic: single throughput 60/3 = 20, role shares 1/3, 1/6, 1/2" \
  grep -qE "^single	4	1	20\.0	0\.333	0\.167	0\.500	60	3\.000	" "$WORK/syn/sweep.tsv"
check "synthetic: a run without tokens is marked, not fatal" grep -qE "^2g1s2l	8	6	-	.*no step metrics" "$WORK/syn/sweep.tsv"
check "synthetic: step_s is the step time when present" grep -qE "^3g1s2l	4	7	30\.0	0\.333	0\.000	0\.000	90	3\.000	" "$WORK/syn/sweep.tsv"
check "synthetic: markdown table has the same rows" test "$(grep -c '^| ' "$WORK/syn/sweep.md")" = 5

skip() {
  echo "SKIP: ************************************************************" >&2
  echo "SKIP: the Slurm test did not run: $*" >&2
  echo "SKIP: ************************************************************" >&2
  echo "RESULT $(basename "$0") $PASS $FAIL (the Slurm part skipped)"
  [ "$FAIL" -eq 0 ]
  exit
}
missing=$(slurm_cluster_missing)
[ -z "$missing" ] || skip "$missing"
# slurmd launches job steps as the submitting user via setuid; that needs root.
[ "$(id -u)" -eq 0 ] || skip "slurmd must run as root to launch jobs (this test runs as $(id -un))"

cluster=$WORK/cluster
if ! slurm_cluster_start "$cluster"; then
  fail "local slurmctld/slurmd did not start (logs above)"
  summary; exit 1
fi
ok

# wait_job ID [SECONDS]: waits until the job leaves PENDING/RUNNING; prints its final state.
wait_job() {
  local id=$1 limit=${2:-300} st= t0=$SECONDS
  if ! [[ $id =~ ^[0-9_]+$ ]]; then echo "NOT_SUBMITTED"; return 0; fi
  while [ $((SECONDS - t0)) -lt "$limit" ]; do
    st=$(scontrol show job "$id" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
    case "$st" in PENDING|RUNNING|CONFIGURING|COMPLETING|"") sleep 0.5 ;; *) echo "$st"; return 0 ;; esac
  done
  scancel "$id" 2>/dev/null
  echo "TIMEOUT_IN_TEST($st)"
}
job_exit() { scontrol show job "$1" | grep -o ' ExitCode=[0-9:]*' | cut -d= -f2; }

# check_run NAME DIR LOG RANKS LAYOUT: a finished pipeline run's metrics and sbatch log
check_run() {
  local name=$1 dir=$2 log=$3 ranks=$4 layout=$5 m=$2/metrics.jsonl st
  [ -s "$m" ] || { echo "$name: no $m; job log:" >&2; tail -20 "$log" >&2; }
  for st in teacher_rl bridge_fkl bridge_opd student_rl; do
    check "$name: $st has step lines in metrics.jsonl" grep -q "\"stage\": \"$st\", \"algo\"" "$m"
  done
  check "$name: metrics are well-formed JSON with tokens and finite losses" python3 -c "
import json, math, sys
rows = [json.loads(l) for l in open('$m')]
steps = [r for r in rows if 'loss' in r]
assert len(steps) == 2 + 1 + 1 + 1, len(steps)
assert all(r['tokens'] > 0 and math.isfinite(r['loss']) for r in steps)
# rank count and layout are written by the MPI runtime; check them when present (a single process names
# the config's layout, its roles all local)
for r in steps:
    assert r.get('ranks', $ranks) == $ranks, r
    assert $ranks == 1 or r.get('layout', '$layout') == '$layout', r
"
  check "$name: sbatch log names the job, layout and cpus" grep -qE "s2d[-a-z]*\.sbatch: job [0-9]+ on .*: $ranks tasks x [0-9]+ cpus, layout $layout" "$log"
  check "$name: sbatch log reports completion" grep -qE "s2d[-a-z]*\.sbatch: done in" "$log"
  check "$name: s2d's progress went to the job log" grep -q "\[student_rl\] step 1/1" "$log"
}

# 1. one task (every role local), 2 cpus for OpenMP
cfg=configs/tests/tiny-pipeline.yaml
# small and fixed whatever the config's defaults: 2 + 1 + 1 + 1 steps of 4 prompts over its four stages
small_steps=(--set 'pipeline[0].steps=2' --set 'pipeline[1].steps=1' --set 'pipeline[2].steps=1' --set 'pipeline[3].steps=1')
small=("${small_steps[@]}")
for i in 0 1 2 3; do small+=(--set "pipeline[$i].prompts_per_step=4"); done
t0=$SECONDS
id=$(sbatch --parsable -n 1 -c 2 --time=5 -o "$WORK/single-%j.out" \
       --export=ALL,S2D_BIN="$S2D",S2D_OUT="$WORK/single" slurm/s2d.sbatch $cfg "${small[@]}")
if [ -z "$id" ]; then
  fail "sbatch did not accept slurm/s2d.sbatch"
else
  state=$(wait_job "$id" 300)
  echo "single-task job $id: $state in $((SECONDS - t0)) s"
  check "single-task job COMPLETED (got $state)" test "$state" = COMPLETED
  check "single-task job exit code 0:0" test "$(job_exit "$id")" = 0:0
  check "single-task job: OMP_NUM_THREADS from --cpus-per-task" grep -q ": 1 tasks x 2 cpus" "$WORK/single-$id.out"
  check_run "single" "$WORK/single" "$WORK/single-$id.out" 1 single
fi

# 2. bad jobs fail as jobs (FAILED, non-zero exit) with the reason in the log
id=$(sbatch --parsable -n 1 -c 1 -o "$WORK/bad1-%j.out" --export=ALL,S2D_BIN="$S2D",S2D_OUT="$WORK/bad1" \
       slurm/s2d.sbatch configs/tests/no-such-config.yaml)
state=$(wait_job "$id" 60)
check "missing config: job FAILED (got $state)" test "$state" = FAILED
check "missing config: the log names the file" grep -q "no-such-config.yaml" "$WORK/bad1-$id.out"
id=$(sbatch --parsable -n 1 -c 1 -o "$WORK/bad2-%j.out" --export=ALL,S2D_BIN="$S2D",S2D_LAYOUT=2g1s2l \
       slurm/s2d.sbatch $cfg)
state=$(wait_job "$id" 60)
check "layout/task mismatch: job FAILED (got $state)" test "$state" = FAILED
check "layout/task mismatch: the log explains" grep -q "layout 2g1s2l needs 6 ranks (G+S+L+1), the job has 1" "$WORK/bad2-$id.out"
check "no output from the failed jobs" test ! -e "$WORK/bad1/metrics.jsonl"
# a step that cannot launch (the pmix plugin finds its per-step directory taken) must fail the job: srun
# itself exits 0 then, so s2d.sbatch checks that the run wrote metrics
next=$((id + 1))
for t in "$cluster/tmp" "$cluster"/tmp/*/; do mkdir -p "$t/spmix_appdir_$(id -u)_$next.0"; done
id=$(sbatch --parsable -n 1 -c 1 -o "$WORK/bad3-%j.out" --export=ALL,S2D_BIN="$S2D",S2D_OUT="$WORK/bad3" \
       slurm/s2d.sbatch $cfg)
state=$(wait_job "$id" 60)
check "step launch failure: job $id (expected $next) FAILED (got $state)" test "$id:$state" = "$next:FAILED"
check "step launch failure: the log explains" grep -q "srun exited 0 but wrote nothing to .*metrics.jsonl" "$WORK/bad3-$id.out"

# 3. four ranks, 1g1s1l, srun --mpi=pmix (only once the MPI runtime reads roles.*)
mpi_ok=
"$S2D" train $cfg --dry-run --out "$WORK/dry" --set roles.generators=1 --set roles.scorers=1 \
  --set roles.learners=1 >/dev/null 2>&1 && mpi_ok=1
if [ -n "$mpi_ok" ]; then
  t0=$SECONDS
  # -O (overcommit): 4 ranks share the 2 cores of this machine
  id=$(sbatch --parsable -n 4 -c 1 -O --time=5 -o "$WORK/mpi-%j.out" \
         --export=ALL,S2D_BIN="$S2D",S2D_OUT="$WORK/mpi" slurm/s2d.sbatch $cfg "${small[@]}")
  state=$(wait_job "$id" 300)
  echo "4-rank job $id: $state in $((SECONDS - t0)) s"
  check "4-rank job COMPLETED (got $state)" test "$state" = COMPLETED
  check_run "1g1s1l" "$WORK/mpi" "$WORK/mpi-$id.out" 4 1g1s1l
  [ "$state" = COMPLETED ] || tail -30 "$WORK/mpi-$id.out" >&2
else
  echo "NOTE: s2d train does not accept roles.* yet (MPI runtime not built in): 4-rank Slurm run not tested" >&2
fi

# 4. the multi-node script: two nodes (two slurmds on this host) x 2 ranks = 1g1s1l across nodes. Both "nodes"
# are this host, so Open MPI's shared-memory transport would mix up the two nodes' segments: TCP over
# loopback instead (the OMPI_MCA_btl hints of s2d-multinode.sbatch, here for real).
nnodes=${#SLURM_CLUSTER_NODES[@]}
if [ -n "$mpi_ok" ] && [ "$nnodes" -ge 2 ]; then
  mn=(-N 2 --ntasks-per-node=2) mn_layout=1g1s1l mn_ranks=4 mn_nodes=2
elif [ -n "$mpi_ok" ]; then
  mn=(-N 1 --ntasks-per-node=4) mn_layout=1g1s1l mn_ranks=4 mn_nodes=1
else
  mn=(-N 1 --ntasks-per-node=1) mn_layout=single mn_ranks=1 mn_nodes=1
fi
t0=$SECONDS
id=$(OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo \
     sbatch --parsable "${mn[@]}" -c 1 --time=5 -o "$WORK/multi-%j.out" \
       --export=ALL,S2D_BIN="$S2D",S2D_OUT="$WORK/multi" slurm/s2d-multinode.sbatch $cfg "${small[@]}")
state=$(wait_job "$id" 300)
echo "multi-node job $id ($mn_nodes nodes, $mn_ranks ranks): $state in $((SECONDS - t0)) s"
check "multinode script job COMPLETED (got $state)" test "$state" = COMPLETED
[ "$state" = COMPLETED ] || tail -30 "$WORK/multi-$id.out" >&2
check_run "multinode $mn_layout" "$WORK/multi" "$WORK/multi-$id.out" $mn_ranks $mn_layout
check "multinode script: log names the node count" grep -qE "on $mn_nodes nodes \(" "$WORK/multi-$id.out"
check "multinode script: log shows the Open MPI settings it ran with" grep -q "OMPI_MCA_btl=self,tcp" "$WORK/multi-$id.out"
if [ "$mn_nodes" -ge 2 ]; then
  check "multinode: the allocation spans two nodes" bash -c \
    "scontrol show job $id | grep -qE ' NodeList=node\[1-2\]'"
fi

# 5. the job-array sweep: two array tasks, then tools/sweep --collect builds the table from their directories
if [ -n "$mpi_ok" ]; then arr_layouts="single 1g1s1l" arr=(-n 4 -O); else arr_layouts="single single"; arr=(-n 1); fi
id=$(sbatch --parsable --array=0-1 "${arr[@]}" -c 1 --time=5 -o "$WORK/arr-%A_%a.out" \
       --export=ALL,S2D_BIN="$S2D",S2D_SWEEP_DIR="$WORK/arr",S2D_SWEEP_LAYOUTS="$arr_layouts",S2D_SWEEP_BATCHES=2 \
       slurm/sweep.sbatch $cfg "${small_steps[@]}")
s0=$(wait_job "${id}_0" 300) s1=$(wait_job "${id}_1" 300)
check "sweep array tasks COMPLETED (got $s0, $s1)" test "$s0 $s1" = "COMPLETED COMPLETED"
if tools/sweep --collect "$WORK/arr" --no-plot >"$WORK/collect.log" 2>&1; then
  ok
  for l in $arr_layouts; do
    check "collected table has $l at batch 2" grep -qE "^$l	2	" "$WORK/arr/sweep.tsv"
  done
else
  fail "tools/sweep --collect: $(tail -5 "$WORK/collect.log")"
fi

# 6. a local sweep (mpirun) over one multi-rank layout
if [ -n "$mpi_ok" ]; then
  if tools/sweep --s2d "$S2D" --config $cfg --layouts 1g1s1l --batches 2 --steps 1 --out "$WORK/lsweep" \
       >"$WORK/lsweep.log" 2>&1; then
    ok
    check "local sweep: 1g1s1l row with throughput" grep -qE '^1g1s1l	2	4	[0-9.]+	.*	ok$' "$WORK/lsweep/sweep.tsv"
    check "local sweep: PNG written" bash -c "head -c 8 '$WORK/lsweep/sweep.png' | od -An -c | grep -q 'P   N   G'"
  else
    fail "tools/sweep (local mpirun): $(tail -5 "$WORK/lsweep.log")"
  fi
fi

# 7. a two-point sweep through sbatch: the table has one row per run, with throughput
if tools/sweep --slurm --threads 2 --s2d "$S2D" --config $cfg --layouts single --batches 2,4 --steps 1 \
     --out "$WORK/sweep" --no-plot >"$WORK/sweep.log" 2>&1; then
  ok
  check "sweep table has both batch sizes" test "$(grep -cE '^single	(2|4)	' "$WORK/sweep/sweep.tsv")" = 2
  check "sweep throughput is positive" awk -F'\t' 'NR > 1 { if (!($4 > 0)) exit 1 }' "$WORK/sweep/sweep.tsv"
else
  fail "tools/sweep --slurm: $(tail -5 "$WORK/sweep.log")"
fi
summary
