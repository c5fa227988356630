#!/usr/bin/env bash
# s2d train --resume: a run stopped after a checkpoint (fault.stop_after_step) and resumed ends with the same
# metrics (minus timings), the same saved models (cmp, bit for bit) and the same HDF5 logs as the uninterrupted
# run: mid-stage, from a stage boundary with logs cut back past the checkpoint, and across learner counts under
# mpirun (6 ranks 2g1s2l -> 1 process, 1 process -> 6 ranks). The HDF5 logs agree with metrics.jsonl (h5py);
# s2d inspect reads a checkpoint; s2d export of the checkpointed policy scores like the saved model.
. "$(dirname "$0")/lib.sh"
cd "$S2D_ROOT" || exit 1
export OMP_NUM_THREADS=1
cfg=configs/tests/tiny-pipeline.yaml
# A shorter pipeline (3 steps of 8 prompts per stage): global steps 1-3 teacher_rl, 4-6 bridge_fkl, 7-9
# bridge_opd (checkpoint every 2: step 8 is mid-stage), 10-12 student_rl.
SETS=()
for i in 0 1 2 3; do SETS+=(--set "pipeline[$i].steps=3" --set "pipeline[$i].prompts_per_step=8"); done
PY=python3
python3 -c 'import h5py' 2>/dev/null || PY=/usr/bin/python3
train() { "$S2D" train $cfg "${SETS[@]}" "$@"; }

same_run() { # dir_a dir_b [roles]: metrics.jsonl without timings, saved models, config.yaml (unless the roles
  local a=$1 b=$2 roles=${3:-} st  # differ), HDF5 logs
  "$PY" - "$a/metrics.jsonl" "$b/metrics.jsonl" <<'PY' || return 1
import json, sys
timing = {"gen_s", "score_s", "learn_s", "sync_s", "step_s", "tokens_per_s", "busy_generators", "busy_scorers",
          "busy_learners", "ranks", "layout"}
rows = [[{k: v for k, v in json.loads(l).items() if k not in timing} for l in open(p)] for p in sys.argv[1:]]
assert len(rows[0]) == len(rows[1]) > 20, (len(rows[0]), len(rows[1]))
for x, y in zip(*rows):
    assert x == y, (x, y)
PY
  for st in teacher_rl bridge_fkl bridge_opd student_rl; do
    cmp -s "$a/models/$st/model.safetensors" "$b/models/$st/model.safetensors" || { echo "model $st differs" >&2; return 1; }
  done
  [ -n "$roles" ] || cmp -s "$a/config.yaml" "$b/config.yaml" || { echo "config.yaml differs" >&2; return 1; }
  "$PY" - "$a" "$b" <<'PY'
import sys, h5py, numpy as np
a, b = sys.argv[1:]
def walk(f):
    out = {}
    f.visititems(lambda k, v: out.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset) else None)
    return out
x, y = walk(h5py.File(f"{a}/rollouts.h5")), walk(h5py.File(f"{b}/rollouts.h5"))
assert x.keys() == y.keys() and len(x) >= 10, (x.keys(), y.keys())
for k in x:
    assert x[k].shape == y[k].shape and np.array_equal(x[k], y[k], equal_nan=True), k
x, y = walk(h5py.File(f"{a}/metrics.h5")), walk(h5py.File(f"{b}/metrics.h5"))
for k in x:
    if k in ("step_s", "tokens_per_s"): continue
    assert np.array_equal(x[k], y[k], equal_nan=True), (k, x[k], y[k])
PY
}

check "uninterrupted run" train --out "$WORK/u" >"$WORK/u.out" 2>"$WORK/u.err"
check "uninterrupted run: checkpoint per stage end and at checkpoint.every" \
  test -s "$WORK/u/checkpoints/ckpt-00-000000003.h5" -a -s "$WORK/u/checkpoints/ckpt-02-000000002.h5" \
       -a -s "$WORK/u/checkpoints/ckpt-03-000000003.h5"

# 1. stop mid-stage (bridge_opd step 2 = global step 8, its checkpoint.every), resume
check "stopped run exits cleanly" train --out "$WORK/s" --set fault.stop_after_step=8 >/dev/null 2>"$WORK/s.err"
check "stopped run wrote the checkpoint of step 8 and no later one" \
  bash -c "test -s '$WORK/s/checkpoints/ckpt-02-000000002.h5' -a ! -e '$WORK/s/checkpoints/ckpt-02-000000003.h5'"
check "stopped run did not finish the pipeline" test ! -e "$WORK/s/models/student_rl"
check "resume" train --out "$WORK/s" --resume >"$WORK/s2.out" 2>"$WORK/s2.err"
check "resume started at bridge_opd step 2" grep -q "resuming from .*ckpt-02-000000002.h5: stage 2 (bridge_opd), step 2" "$WORK/s2.err"
check "resume did not redo earlier steps" bash -c "! grep -qE '\[(teacher_rl|bridge_fkl)\] step|\[bridge_opd\] step [12]/' '$WORK/s2.err'"
check "mid-stage resume equals the uninterrupted run" same_run "$WORK/u" "$WORK/s"
check "summary table after resume" grep -q "^student_rl" "$WORK/s2.out"

# 2. resume from an older checkpoint (a stage boundary): rollouts.h5 / metrics.h5 hold steps past it and are cut
train --out "$WORK/t" --set fault.stop_after_step=8 >/dev/null 2>&1
rm -f "$WORK/t/checkpoints/ckpt-02-000000002.h5"
check "resume from a stage boundary" train --out "$WORK/t" --resume >/dev/null 2>"$WORK/t2.err"
check "logs were cut back to the checkpoint" grep -q "rollouts.h5: dropping 2 steps logged after the checkpoint" "$WORK/t2.err"
check "stage-boundary resume equals the uninterrupted run" same_run "$WORK/u" "$WORK/t"

# 3. logs against metrics.jsonl
logs_match() {
  "$PY" - "$1" <<'PY'
import json, sys, h5py, numpy as np
d = sys.argv[1]
rows = [r for r in map(json.loads, open(f"{d}/metrics.jsonl")) if "algo" in r]
r5, m5 = h5py.File(f"{d}/rollouts.h5"), h5py.File(f"{d}/metrics.h5")
assert r5.attrs["format"] in ("s2d-rollouts", b"s2d-rollouts")
assert len(r5["steps/step"]) == len(rows) == len(m5["step"]), (len(r5["steps/step"]), len(rows))
off, plen, rew = r5["seqs/offsets"][:], r5["seqs/prompt_len"][:], r5["seqs/reward"][:]
beh, tea, ref = r5["logp/behaviour"][:], r5["logp/teacher"][:], r5["logp/reference"][:]
stages = ["teacher_rl", "bridge_fkl", "bridge_opd", "student_rl"]
for i, row in enumerate(rows):
    s0, n = int(r5["steps/seq_begin"][i]), int(r5["steps/n_seqs"][i])
    assert stages[r5["steps/stage"][i]] == row["stage"] and r5["steps/step"][i] == row["step"]
    assert r5["steps/policy_version"][i] == row["policy_version"]
    lens = np.diff(off[s0:s0 + n + 1])
    assert lens.sum() == row["tokens"], (i, lens.sum(), row["tokens"])
    assert (lens - plen[s0:s0 + n]).sum() == row["generated_tokens"], i
    t0, t1 = off[s0], off[s0 + n]
    if row["algo"] == "grpo":
        assert abs(rew[s0:s0 + n].mean() - row["reward_mean"]) < 1e-6, i
        assert np.isfinite(ref[t0:t1]).all()    # kl_beta > 0: the reference's log-probs are logged
    else:
        assert np.isnan(rew[s0:s0 + n]).all(), i
    assert np.isfinite(tea[t0:t1]).all() == (row["algo"] == "opd"), i
    assert (beh[t0:t1] <= 0).all()
    for k in ["loss", "kl", "grad_norm", "lr", "tokens", "trained_tokens", "labelled_total"]:
        v, want = m5[k][i], row[k]
        assert abs(v - want) <= 1e-5 * max(1, abs(want)), (i, k, v, want)
    assert m5["stage"][i] == r5["steps/stage"][i] and m5["step"][i] == row["step"]
PY
}
check "rollouts.h5 and metrics.h5 agree with metrics.jsonl (h5py)" logs_match "$WORK/u"
check "logging switched off: no HDF5 logs" bash -c "'$S2D' train $cfg --out '$WORK/nolog' --set logging.rollouts=false \
  --set logging.metrics_h5=false --set 'pipeline[0].steps=1' --set 'pipeline[1].steps=1' --set 'pipeline[2].steps=1' \
  --set 'pipeline[3].steps=1' >/dev/null 2>&1 && test ! -e '$WORK/nolog/rollouts.h5' -a ! -e '$WORK/nolog/metrics.h5'"

# 4. inspect and export of a checkpoint
ck="$WORK/u/checkpoints/ckpt-02-000000002.h5"
check "inspect a mid-stage checkpoint" bash -c "'$S2D' inspect '$ck' | grep -q 'model bridge_opd: .*optimizer state (AdamW step 2)'"
check "inspect shows the data cursor" bash -c "'$S2D' inspect '$ck' | grep -q 'state cursor.bridge_opd'"
ck3="$WORK/u/checkpoints/ckpt-03-000000003.h5"
check "export the checkpointed policy" "$S2D" export "$ck3" --model student_rl --out "$WORK/exp" --tokenizer configs/demo/tokenizer
printf '[1, 5, 9, 33, 2, 100, 7]\n[4, 4, 4, 300, 12]\n' >"$WORK/ids.jsonl"
check "exported policy scores like the saved model" bash -c "'$S2D' logprobs --model '$WORK/exp' < '$WORK/ids.jsonl' > '$WORK/a.jsonl' && \
  '$S2D' logprobs --model '$WORK/u/models/student_rl' < '$WORK/ids.jsonl' | cmp -s - '$WORK/a.jsonl'"

# 5. bad input
expect_error "resume without checkpoints names the directory" "$WORK/none: nothing to resume" train --out "$WORK/none" --resume
expect_error "resume with a changed config is refused" "'pipeline' differs from the checkpoint's config" \
  train --out "$WORK/s" --resume --set 'pipeline[3].steps=4'

# 6. SIGTERM (what mpirun sends when a peer aborts) leaves no temp files; the newest checkpoint still resumes
sigterm_run() {
  "$S2D" train $cfg "${SETS[@]}" --out "$WORK/k" --set 'pipeline[0].steps=400' --set 'pipeline[0].checkpoint.every=5' \
    >/dev/null 2>"$WORK/k.err" &
  local pid=$! i
  for i in $(seq 1 300); do # until it has written a mid-stage checkpoint (and so holds metrics.jsonl.tmp.<pid>);
    # a complete one: the checkpoint being written is ckpt-...h5.tmp.<pid>, which SIGTERM removes
    ls "$WORK/k/checkpoints" 2>/dev/null | grep -q 'ckpt-00-.*\.h5$' && ls "$WORK/k" | grep -q 'metrics.jsonl.tmp' && break
    sleep 0.1
  done
  ls "$WORK/k" | grep -q 'metrics.jsonl.tmp' || { kill $pid; echo "no temp file seen" >&2; return 1; }
  kill -TERM $pid
  wait $pid
  local rc=$?
  [ $rc -eq 143 ] || { echo "exit status $rc, expected 143 (SIGTERM)" >&2; return 1; }
  ! find "$WORK/k" -name '*.tmp.*' | grep -q .
}
check "SIGTERM removes the temp files and ends with the signal's status" sigterm_run
last=$(ls "$WORK/k/checkpoints" | sort | tail -1); last_step=$((10#$(sed 's/.*-\([0-9]*\)\.h5/\1/' <<<"$last")))
check "the killed run resumes from its newest checkpoint ($last)" bash -c "'$S2D' train $cfg ${SETS[*]} --out '$WORK/k' \
  --set 'pipeline[0].steps=400' --set 'pipeline[0].checkpoint.every=5' --set fault.stop_after_step=$((last_step + 1)) \
  --resume >/dev/null 2>'$WORK/k2.err' && grep -q 'resuming from .*$last' '$WORK/k2.err'"

# 7. another number of learners: 6 ranks (2 learners) -> 1 process, and 1 process -> 6 ranks
if command -v mpirun >/dev/null; then
  MPI=(timeout 120 mpirun --allow-run-as-root --oversubscribe --mca mpi_yield_when_idle 1 -x OMP_NUM_THREADS=1 -np 6)
  ROLES=(--set roles.generators=2 --set roles.learners=2)
  check "6 ranks stop in student_rl" "${MPI[@]}" "$S2D" train $cfg "${SETS[@]}" "${ROLES[@]}" --out "$WORK/m" \
    --set fault.stop_after_step=11 >/dev/null 2>"$WORK/m.err"
  check "resume the 2-learner checkpoint in one process" train --out "$WORK/m" --resume >/dev/null 2>"$WORK/m2.err"
  check "2 learners -> 1: equals the uninterrupted run" same_run "$WORK/u" "$WORK/m"
  check "one process stops in bridge_fkl" train --out "$WORK/n" --set fault.stop_after_step=5 >/dev/null 2>&1
  check "resume the 1-learner checkpoint on 6 ranks" "${MPI[@]}" "$S2D" train $cfg "${SETS[@]}" "${ROLES[@]}" \
    --out "$WORK/n" --resume >/dev/null 2>"$WORK/n2.err"
  check "1 learner -> 2: equals the uninterrupted run" same_run "$WORK/u" "$WORK/n" roles
else
  echo "SKIP: no mpirun (learner-count changes)"
fi
summary
