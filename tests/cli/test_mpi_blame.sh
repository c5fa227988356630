#!/usr/bin/env bash
# Under mpirun, a rank that stops answering is the one the error names, with its role: a SIGSTOPped generator or
# learner (found stopped on this host when a short runtime.timeout_s runs out, or by the scheduler's heartbeat
# check with a long one), a hung one (busy outside any exchange, from its heartbeats), a SIGKILLed one (named
# with its role when the launcher ends the job). Before this, a stopped generator was reported as "rank 2
# (scorer) waited 3 s for the token batch header from rank 0 (scheduler)". Every job ends (no hang).
. "$(dirname "$0")/lib.sh"
if ! command -v mpirun >/dev/null; then echo "SKIP: no mpirun"; summary; exit; fi
cp -r "$S2D_ROOT/tests/fixtures/models" "$WORK/models"
cd "$WORK" || exit 1
export OMP_NUM_THREADS=1
MPI=(mpirun --allow-run-as-root --oversubscribe --mca mpi_yield_when_idle 1 -x OMP_NUM_THREADS=1)
# the smallest run: the shipped tiny pipeline, 8 prompts a step, the fault at global step 2 of the first stage
sed 's#tests/fixtures/models#models#' "$S2D_ROOT/configs/tests/tiny-pipeline.yaml" >tiny.yaml
SMALL=(--set 'pipeline[0].steps=3' --set 'pipeline[0].prompts_per_step=8' --set fault.at_step=2)
blame_run() { # name, expected pattern, extra args...: the job fails, within the limit, printing the pattern
  local name=$1 pattern=$2; shift 2
  timeout 60 "${MPI[@]}" -np 4 "$S2D" train tiny.yaml --out "$name" "${SMALL[@]}" "$@" >"$name.log" 2>&1
  local rc=$?
  if [ $rc -eq 0 ]; then fail "$name: exit 0"; return; fi
  if [ $rc -eq 124 ]; then fail "$name: still running after 60 s (a hang)"; return; fi
  if ! grep -qE -- "$pattern" "$name.log"; then fail "$name: no /$pattern/ in: $(grep 's2d: ' "$name.log" | tail -5)"; return; fi
  ok
}
# SIGSTOP, short receive timeout (the heartbeat limit is the default 30 s): every rank that gives up names the
# stopped one, never the scheduler it happened to wait on
blame_run stop_gen "error \[rank [0-9], [a-z]+\] .*: rank 1 \(generator 0, pid [0-9]+ on [^)]+\) stopped answering: it is stopped \(SIGSTOP" \
  --set fault.rank=1 --set fault.kind=stop --set runtime.timeout_s=5
check "stop_gen: no message blames the scheduler" bash -c "! grep -E 'error .*(stopped answering|waited).*' stop_gen.log | grep -qv 'rank 1 (generator 0'"
blame_run stop_learner "error \[rank [0-9], [a-z]+\] .*: rank 3 \(learner 0, pid [0-9]+ on [^)]+\) stopped answering: it is stopped \(SIGSTOP" \
  --set fault.rank=3 --set fault.kind=stop --set runtime.timeout_s=5
# SIGSTOP, long receive timeout: the scheduler's heartbeat check names the silent worker
blame_run stop_gen_heartbeat "error \[rank 0, scheduler\] .*: rank 1 \(generator 0, pid [0-9]+ on [^)]+\) stopped answering: the scheduler \(rank 0\) heard no heartbeat from it for [0-9]+ s \(runtime.heartbeat_s\)" \
  --set fault.rank=1 --set fault.kind=stop --set runtime.timeout_s=600 --set runtime.heartbeat_s=4
# a hung generator still beats, but from outside any exchange: the scorer waiting on the scheduler names it
blame_run hang_gen "rank 1 \(generator 0, pid [0-9]+ on [^)]+\) stopped answering: it has been busy outside any exchange" \
  --set fault.rank=1 --set fault.kind=hang --set runtime.timeout_s=5
# SIGKILL: the launcher ends the job, and one rank of the host names the dead one with its role, once
blame_run kill_gen "s2d: rank 1 \(generator 0, pid [0-9]+ on [^)]+\) is gone: killed or crashed" --set fault.rank=1
check "kill_gen: named once" test "$(grep -c 'is gone: killed or crashed' kill_gen.log)" = 1
blame_run kill_sched "s2d: rank 0 \(scheduler 0, pid [0-9]+ on [^)]+\) is gone: killed or crashed" --set fault.rank=0
# a rank that fails with its own error is not reported as killed (it marks itself leaving before MPI_Abort)
blame_run error_scorer "error \[rank 2, scorer\].*injected fault" --set fault.rank=2 --set fault.kind=error
check "error_scorer: nobody is called killed" bash -c "! grep -q 'is gone' error_scorer.log"
summary
