#!/usr/bin/env bash
# s2d train under mpirun: the same pipeline as one process, bit for bit, at layouts 1g1s1l (4 ranks) and
# 2g1s2l (6 ranks); start-up errors for a wrong world size or learners that do not align with the
# micro-batches; a killed, failing or hanging rank ends the job within 30 s with a message naming rank and role.
. "$(dirname "$0")/lib.sh"
cd "$S2D_ROOT" || exit 1
if ! command -v mpirun >/dev/null; then echo "SKIP: no mpirun"; summary; exit; fi
export OMP_NUM_THREADS=1
MPI=(mpirun --allow-run-as-root --oversubscribe --mca mpi_yield_when_idle 1 -x OMP_NUM_THREADS=1)
cfg=configs/tests/tiny-pipeline.yaml
# the shipped config (pre-trained tiny models, real rewards in both GRPO stages) at 6 steps a stage: the full 32
# steps take ~2 min a run single-process on a 2-core machine without AVX-512, too long for three layouts
SETS=(--set 'pipeline[0].steps=6' --set 'pipeline[1].steps=6' --set 'pipeline[2].steps=6' --set 'pipeline[3].steps=6')
run_timed() { # name, command...: runs it, records seconds in $WORK/name.s
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"; local rc=$?
  awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.1f\n", a - b }' >"$WORK/$name.s"
  return $rc
}
check "single process" run_timed r1 "$S2D" train $cfg --out "$WORK/r1" "${SETS[@]}"
check "mpirun -np 4 (1g1s1l)" run_timed r4 timeout 300 "${MPI[@]}" -np 4 "$S2D" train $cfg --out "$WORK/r4" "${SETS[@]}"
check "mpirun -np 6 (2g1s2l)" run_timed r6 timeout 300 "${MPI[@]}" -np 6 "$S2D" train $cfg --out "$WORK/r6" "${SETS[@]}" \
  --set roles.generators=2 --set roles.learners=2
echo "times: 1 process $(cat "$WORK/r1.s")s, 4 ranks $(cat "$WORK/r4.s")s, 6 ranks $(cat "$WORK/r6.s")s"
same_metrics() {
  python3 - "$1" "$2" <<'PY'
import json, math, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert len(a) == len(b) and len(a) > 0, (len(a), len(b))
keys = ["stage", "step", "event", "loss", "reward_mean", "accuracy", "kl", "grad_norm", "lr", "tokens",
        "trained_tokens", "generated_tokens", "labelled_unique", "labelled_total", "unlabelled_prompts", "problems"]
for x, y in zip(a, b):
    for k in keys:
        assert x.get(k) == y.get(k), (x.get("stage"), x.get("step"), k, x.get(k), y.get(k))
# a real signal went through every stage: nonzero gradients in each of the four stages
for st in ["teacher_rl", "bridge_fkl", "bridge_opd", "student_rl"]:
    assert any(r.get("grad_norm", 0) > 0 for r in a if r["stage"] == st), st
PY
}
layout_fields() { # file, ranks, layout
  python3 - "$@" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"algo"' in l]
for r in rows:
    assert r["ranks"] == int(sys.argv[2]) and r["layout"] == sys.argv[3], r
    for k in ["gen_s", "score_s", "learn_s", "sync_s", "tokens_per_s"]: assert r[k] >= 0, (k, r)
    for k in ["busy_generators", "busy_scorers", "busy_learners"]: assert 0 <= r[k] <= 1.0001, (k, r)
assert any(r["busy_learners"] > 0 for r in rows)
PY
}
# runtime.reduce: fast (the transport's reduce-scatter into the ZeRO-1 shards, the norm from all-reduced shard
# sums): the same training as deterministic up to float rounding; a short run of every stage at 5 ranks (2 learners)
SHORT=(--set 'pipeline[0].steps=3' --set 'pipeline[1].steps=3' --set 'pipeline[2].steps=3' --set 'pipeline[3].steps=3')
check "short single process" "$S2D" train $cfg --out "$WORK/s1" "${SHORT[@]}"
check "mpirun -np 5 (1g1s2l), runtime.reduce=fast" run_timed sf timeout 300 "${MPI[@]}" -np 5 "$S2D" train $cfg \
  --out "$WORK/sf" "${SHORT[@]}" --set roles.learners=2 --set runtime.reduce=fast
check "fast mode says it reduces by reduce-scatter" grep -q "reduce-scatter (runtime.reduce: fast)" "$WORK/sf.err"
close_metrics() {
  python3 - "$1" "$2" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1]) if '"algo"' in l]
b = [json.loads(l) for l in open(sys.argv[2]) if '"algo"' in l]
assert len(a) == len(b) == 12, (len(a), len(b))
for x, y in zip(a, b):
    for k in ["loss", "grad_norm", "kl"]:
        assert abs(x[k] - y[k]) <= 1e-4 * (1 + abs(x[k])), (x["stage"], x["step"], k, x[k], y[k])
assert all(r["grad_norm"] > 0 for r in b)
PY
}
check "fast reduction trains as the deterministic one (to rounding)" close_metrics "$WORK/s1/metrics.jsonl" "$WORK/sf/metrics.jsonl"
# opd.mode full at λ = 1.25: the target rows (teacher and reference, combined on the scorer: TP_PAYLOAD) reach the
# learner; 4 ranks train the same bits as one process, and not the bits of the sampled-token mode
OPDF=("${SHORT[@]}" --set 'pipeline[2].opd.mode=full' --set 'pipeline[2].opd.lambda=1.25')
check "opd.mode full: single process" "$S2D" train $cfg --out "$WORK/of1" "${OPDF[@]}"
check "opd.mode full: mpirun -np 4" timeout 300 "${MPI[@]}" -np 4 "$S2D" train $cfg --out "$WORK/of4" "${OPDF[@]}"
check "opd.mode full: 4 ranks, same bridge_opd weights" cmp -s "$WORK/of1/models/bridge_opd/model.safetensors" "$WORK/of4/models/bridge_opd/model.safetensors"
check "opd.mode full: 4 ranks, same metrics" same_metrics "$WORK/of1/metrics.jsonl" "$WORK/of4/metrics.jsonl"
check "opd.mode full trains other weights than sampled" bash -c "! cmp -s '$WORK/s1/models/bridge_opd/model.safetensors' '$WORK/of1/models/bridge_opd/model.safetensors'"
if [ -s "$WORK/r1/metrics.jsonl" ] && [ -s "$WORK/r4/metrics.jsonl" ] && [ -s "$WORK/r6/metrics.jsonl" ]; then
  check "4 ranks: same metrics as one process" same_metrics "$WORK/r1/metrics.jsonl" "$WORK/r4/metrics.jsonl"
  check "6 ranks: same metrics as one process" same_metrics "$WORK/r1/metrics.jsonl" "$WORK/r6/metrics.jsonl"
  for st in teacher_rl bridge_fkl bridge_opd student_rl; do
    check "4 ranks: $st weights identical" cmp -s "$WORK/r1/models/$st/model.safetensors" "$WORK/r4/models/$st/model.safetensors"
    check "6 ranks: $st weights identical" cmp -s "$WORK/r1/models/$st/model.safetensors" "$WORK/r6/models/$st/model.safetensors"
  done
  check "layout fields (1 process)" layout_fields "$WORK/r1/metrics.jsonl" 1 1g1s1l
  check "layout fields (4 ranks)" layout_fields "$WORK/r4/metrics.jsonl" 4 1g1s1l
  check "layout fields (6 ranks)" layout_fields "$WORK/r6/metrics.jsonl" 6 2g1s2l
  check "each rank announces its role" grep -q "rank 5 of 6 is learner 1" "$WORK/r6.err"
  check "progress lines show busy fractions" grep -q "busy g.*l.*ETA" "$WORK/r6.err"
  check "only the scheduler prints the summary" test "$(grep -c '^student_rl' "$WORK/r6.out")" = 1
  # the comparison can fail: another seed changes the metrics
  "$S2D" train $cfg --out "$WORK/r1b" "${SETS[@]}" --set seed=4 >/dev/null 2>&1
  check "a different seed gives different weights" bash -c "! cmp -s '$WORK/r1/models/student_rl/model.safetensors' '$WORK/r1b/models/student_rl/model.safetensors'"
else
  fail "runs did not finish: $(tail -n 3 "$WORK/r4.err" "$WORK/r6.err")"
fi

# start-up errors
expect_error "world size differs from the roles" "1 generators \+ 1 scorers \+ 1 learners \+ 1 scheduler = 4 ranks, but the MPI world has 3" \
  timeout 60 "${MPI[@]}" -np 3 "$S2D" train $cfg --out "$WORK/e1"
expect_error "learners that do not align with micro-batches" "roles.learners: 3 learners cannot each own a whole subtree" \
  "$S2D" train $cfg --out "$WORK/e2" --set roles.learners=3
check "no output from failed starts" test ! -e "$WORK/e1" -a ! -e "$WORK/e2"

# failures end the whole job within 30 s, naming rank and role (test_mpi_blame.sh: the rank that stopped answering)
fault_run() { # name, expected pattern, extra args...
  local name=$1 pattern=$2; shift 2
  local t0 t1 rc
  t0=$(date +%s)
  timeout 60 "${MPI[@]}" -np 4 "$S2D" train $cfg --out "$WORK/$name" "$@" >"$WORK/$name.log" 2>&1; rc=$?
  t1=$(date +%s)
  if [ $rc -eq 0 ]; then fail "$name: exit 0"; return; fi
  if [ $rc -eq 124 ]; then fail "$name: still running after 60 s"; return; fi
  if [ $((t1 - t0)) -gt 30 ]; then fail "$name: took $((t1 - t0)) s"; return; fi
  if ! grep -qE -- "$pattern" "$WORK/$name.log"; then fail "$name: no /$pattern/ in: $(tail -5 "$WORK/$name.log")"; return; fi
  if [ -e "$WORK/$name/metrics.jsonl" ]; then fail "$name: a final metrics.jsonl was written"; return; fi
  ok
}
fault_run kill "rank 3 .*(exited on signal 9|Killed)" --set fault.rank=3 --set fault.at_step=2
check "kill: the rank's role is on record" grep -q "rank 3 of 4 is learner 0" "$WORK/kill.log"
check "kill: the dead rank is named with its role" grep -qE "s2d: rank 3 \(learner 0, pid [0-9]+ on [^)]+\) is gone: killed or crashed" "$WORK/kill.log"
fault_run error "error \[rank 2, scorer\].*injected fault" --set fault.rank=2 --set fault.at_step=2 --set fault.kind=error
# (8 prompts a step: at 64, a loaded 2-core machine's first step can itself outlast the short timeout, and the
# message then rightly names the generator still busy with it)
fault_run hang "rank 3 \(learner 0, pid [0-9]+ on [^)]+\) stopped answering: it has been busy outside any exchange" --set fault.rank=3 --set fault.at_step=2 \
  --set fault.kind=hang --set runtime.timeout_s=5 --set 'pipeline[0].prompts_per_step=8'
# a frozen scheduler (SIGSTOP: alive to the launcher, silent to everyone) is caught by the heartbeat, not the
# (here much longer) receive timeout
fault_run freeze "heard no heartbeat from the scheduler \(rank 0\) for [0-9]+ s" --set fault.rank=0 --set fault.at_step=2 \
  --set fault.kind=stop --set runtime.heartbeat_s=3 --set runtime.timeout_s=600
summary
