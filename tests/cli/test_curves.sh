#!/usr/bin/env bash
# Watching curves: the verl metrics and the global step in metrics.jsonl and metrics.h5, the TensorBoard event
# file (read back with tests/cli/tb_read.py: TFRecord framing, masked CRC-32C, Event/Summary decoded by hand,
# compared scalar by scalar with metrics.jsonl; also with TensorBoard's EventAccumulator when the python in
# S2D_TB_PYTHON (default python3) can import tensorboard), a stopped and resumed run rewriting the whole
# history, logging.tensorboard: false, and `s2d plot` (one valid PNG per stage; its errors).
. "$(dirname "$0")/lib.sh"
PY=python3
python3 -c 'import h5py' 2>/dev/null || PY=/usr/bin/python3
TB_PY=${S2D_TB_PYTHON:-python3}
READER=$S2D_ROOT/tests/cli/tb_read.py
cd "$WORK" || exit 1
# the tiny pipeline with its model paths made absolute (the test runs in $WORK)
cfg=$WORK/tiny.yaml
sed "s|path: tests/fixtures/|path: $S2D_ROOT/tests/fixtures/|" "$S2D_ROOT/configs/tests/tiny-pipeline.yaml" >"$cfg"
# the tiny pipeline at 8 prompts per step: teacher_rl 2 steps, bridge_fkl 1, bridge_opd 2, student_rl 2 (7 global steps)
SETS=(--set pipeline[0].steps=2 --set pipeline[1].steps=1 --set pipeline[2].steps=2 --set pipeline[3].steps=2)
for i in 0 1 2 3; do SETS+=(--set "pipeline[$i].prompts_per_step=8" --set "pipeline[$i].eval.problems=8"); done
out=$WORK/run

# 1. a run stopped after global step 3 (bridge_fkl's only step, a stage end), then resumed to the end
check "stopped run" "$S2D" train "$cfg" --out "$out" "${SETS[@]}" --set fault.stop_after_step=3 >/dev/null 2>"$WORK/s.err"
first=$(ls "$out/tensorboard" 2>/dev/null)
check "the stopped run wrote one event file" test "$(echo "$first" | grep -c '^events\.out\.tfevents\.')" = 1
check "resumed run" "$S2D" train "$cfg" --out "$out" "${SETS[@]}" --resume >/dev/null 2>"$WORK/r.err"
ev=$(ls "$out"/tensorboard/events.out.tfevents.* 2>/dev/null)
check "after the resume: one event file, a new one (the earlier session's is removed)" \
  bash -c "test \$(ls '$out/tensorboard' | wc -l) = 1 && test '$(basename "$ev")' != '$first'"

check "metrics.jsonl: global step in every record, verl metrics per algo" "$PY" - "$out/metrics.jsonl" <<'PY'
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert all("global_step" in r for r in rows), [r for r in rows if "global_step" not in r]
steps = [r for r in rows if "algo" in r]
assert [r["global_step"] for r in steps] == list(range(1, 8)), [r["global_step"] for r in steps]
stage_end = {}
for r in steps: stage_end[r["stage"]] = r["global_step"]
for r in rows:  # eval and labels lines sit at the global step where they were taken
    if r.get("event") == "labels": assert r["global_step"] == stage_end[r["stage"]], r
    if r.get("event") == "eval" and r["step"] > 0: assert r["global_step"] == stage_end[r["stage"]], r
gen = ["entropy", "response_length_mean", "response_length_max", "truncation_rate"]
grp = ["reward_std", "advantage_std", "zero_variance_fraction", "pg_loss", "kl_loss"]
for r in steps:
    for k in gen: assert isinstance(r[k], (int, float)) and r[k] >= 0, (k, r)   # every stage generates
    assert 0 < r["response_length_mean"] <= r["response_length_max"] <= 20, r  # max_new_tokens: 20
    assert 0 <= r["truncation_rate"] <= 1, r
    if r["algo"] == "grpo":
        for k in grp: assert isinstance(r[k], (int, float)), (k, r)
        assert 0 <= r["zero_variance_fraction"] <= 1 and r["reward_std"] >= 0 and r["advantage_std"] >= 0, r
        # the loss is its policy-gradient part plus the KL penalty (6 significant digits in the file)
        tol = 5e-6 * (abs(r["loss"]) + abs(r["pg_loss"]) + abs(r["kl_loss"])) + 1e-12
        assert abs(r["loss"] - r["pg_loss"] - r["kl_loss"]) <= tol, r
        if r["stage"] == "teacher_rl": assert r["kl_loss"] > 0, r  # kl_beta 0.01, k3 > 0 off-policy (2 minibatches)
        if r["stage"] == "student_rl":  # one minibatch: kl_loss is kl_beta times the step's KL estimate
            assert abs(r["kl_loss"] - 0.01 * r["kl"]) <= 1e-5 * abs(r["kl_loss"]) + 1e-12, r
    else:
        for k in ["reward_std", "advantage_std", "zero_variance_fraction", "kl_loss"]: assert r[k] is None, (k, r)
        assert (r["pg_loss"] is None) == (r["algo"] == "fkl"), r
        if r["algo"] == "opd": assert r["pg_loss"] == r["loss"], r
# group statistics are not constants: the teacher's rewards vary within and across groups
t = [r for r in steps if r["stage"] == "teacher_rl"]
assert any(r["reward_std"] > 0 for r in t) and any(r["advantage_std"] > 0 for r in t), t
PY

check "metrics.h5: the new columns equal metrics.jsonl" "$PY" - "$out" <<'PY'
import json, sys, h5py, numpy as np
d = sys.argv[1]
steps = [r for r in (json.loads(l) for l in open(f"{d}/metrics.jsonl")) if "algo" in r]
with h5py.File(f"{d}/metrics.h5", "r") as f:
    for k in ["global_step", "pg_loss", "kl_loss", "entropy", "response_length_mean", "response_length_max",
              "truncation_rate", "reward_std", "advantage_std", "zero_variance_fraction"]:
        col = f[k][()]
        want = np.array([np.nan if r[k] is None else r[k] for r in steps], dtype=np.float64)
        assert col.shape == want.shape, (k, col.shape, want.shape)
        ok = np.isclose(col, want, rtol=1e-5, atol=0, equal_nan=True)  # jsonl holds 6 significant digits
        assert ok.all(), (k, col, want)
PY

check "event file: framing, CRCs, scalars equal metrics.jsonl" "$PY" - "$READER" "$ev" "$out/metrics.jsonl" <<'PY'
import json, struct, subprocess, sys
reader, ev, m = sys.argv[1:]
p = subprocess.run([sys.executable, reader, ev], capture_output=True, text=True)
assert p.returncode == 0, p.stderr
recs = [json.loads(l) for l in p.stdout.splitlines()]
assert recs[0].get("file_version") == "brain.Event:2", recs[0]
got = {}
for r in recs[1:]:
    assert (r["tag"], r["step"]) not in got, ("duplicate", r)
    got[(r["tag"], r["step"])] = r["value"]
f32 = lambda v: struct.unpack("<f", struct.pack("<f", v))[0]
want = {}
for row in map(json.loads, open(m)):
    pre = row["stage"] + "/" + (row["event"] + "_" if "event" in row else "")
    for k, v in row.items():
        if k in ("step", "global_step") or isinstance(v, (str, bool)) or v is None: continue
        want[(pre + k, row["global_step"])] = f32(v)
assert got == want, (set(got) ^ set(want), [(k, got.get(k), want[k]) for k in want if got.get(k) != want[k]][:5])
tags = {t for t, _ in got}
for t in ["teacher_rl/loss", "teacher_rl/pg_loss", "teacher_rl/kl_loss", "teacher_rl/entropy",
          "teacher_rl/reward_std", "teacher_rl/advantage_std", "teacher_rl/zero_variance_fraction",
          "student_rl/response_length_mean", "student_rl/response_length_max", "student_rl/truncation_rate",
          "teacher_rl/eval_accuracy", "bridge_opd/kl"]:
    assert t in tags, t
assert len(got) > 150, len(got)
PY

# the reader itself: a flipped byte in a record must fail its CRC check
cp "$ev" "$WORK/bad.tfevents"
printf '\x7f' | dd of="$WORK/bad.tfevents" bs=1 seek=40 conv=notrunc 2>/dev/null
expect_error "tb_read.py catches a damaged record" "CRC mismatch" "$PY" "$READER" "$WORK/bad.tfevents"

if "$TB_PY" -c 'import tensorboard' 2>/dev/null; then
  check "TensorBoard's EventAccumulator reads the same scalars" "$TB_PY" - "$out" <<'PY'
import json, struct, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
d = sys.argv[1]
ea = EventAccumulator(f"{d}/tensorboard", size_guidance={"scalars": 0})
ea.Reload()
f32 = lambda v: struct.unpack("<f", struct.pack("<f", v))[0]
n = 0
for row in map(json.loads, open(f"{d}/metrics.jsonl")):
    if "algo" not in row: continue
    for k in ("loss", "entropy", "response_length_mean", "grad_norm"):
        s = {e.step: e.value for e in ea.Scalars(f"{row['stage']}/{k}")}
        assert s[row["global_step"]] == f32(row[k]), (k, row["global_step"], s, row[k])
        n += 1
assert n == 28, n
PY
else
  echo "note: $TB_PY cannot import tensorboard: EventAccumulator check skipped (set S2D_TB_PYTHON)" >&2
fi

# 2. s2d plot: one valid PNG per stage (default OUT/plots, and --out)
valid_pngs() { # dir, expected count
  "$PY" - "$1" "$2" <<'PY'
import os, struct, sys, zlib
d, n = sys.argv[1], int(sys.argv[2])
names = sorted(os.listdir(d))
assert names == sorted(f"{s}.png" for s in ["teacher_rl", "bridge_fkl", "bridge_opd", "student_rl"]), names
assert len(names) == n
for name in names:
    b = open(os.path.join(d, name), "rb").read()
    assert b[:8] == b"\x89PNG\r\n\x1a\n", name
    ln, typ = struct.unpack(">I4s", b[8:16])
    assert typ == b"IHDR" and ln == 13, name
    w, h = struct.unpack(">II", b[16:24])
    assert w >= 500 and h >= 300, (name, w, h)
    assert struct.unpack(">I", b[29:33])[0] == zlib.crc32(b[12:29]), name  # the IHDR chunk's CRC
    assert b[-8:-4] == b"IEND" and len(b) > 10000, name
PY
}
check "s2d plot OUT" bash -c "'$S2D' plot '$out' > '$WORK/plot.out' 2>'$WORK/plot.err'"
check "plots: one valid PNG per stage in OUT/plots" valid_pngs "$out/plots" 4
check "plot prints the files it wrote" test "$(grep -c '/plots/.*\.png$' "$WORK/plot.out")" = 4
check "s2d plot --out DIR" bash -c "'$S2D' plot '$out' --out '$WORK/p2/x' >/dev/null 2>&1"
check "plots in --out DIR" valid_pngs "$WORK/p2/x" 4
check "no temp files left" test -z "$(find "$out/plots" "$WORK/p2/x" -name '*.tmp.*')"

mkdir -p "$WORK/empty" "$WORK/nosteps"
grep '"event"' "$out/metrics.jsonl" >"$WORK/nosteps/metrics.jsonl"
expect_error "plot: OUT does not exist" "nothere: No such file" "$S2D" plot "$WORK/nothere"
expect_error "plot: OUT has no metrics" "empty/metrics.jsonl: no metrics.jsonl: .* holds no training metrics" \
  "$S2D" plot "$WORK/empty"
expect_error "plot: no step records" "nosteps/metrics.jsonl: no step records to plot" "$S2D" plot "$WORK/nosteps"
mkdir -p "$WORK/badjson" && { head -3 "$out/metrics.jsonl"; echo '{"stage": oops'; } >"$WORK/badjson/metrics.jsonl"
expect_error "plot: bad JSON names file:line" "badjson/metrics.jsonl:4: invalid JSON" "$S2D" plot "$WORK/badjson"
expect_error "plot: gnuplot missing" "gnuplot not found on PATH.*gnuplot-nox" env PATH=/nonexistent "$S2D" plot "$out" --out "$WORK/p3"
check "plot: nothing written when gnuplot is missing" bash -c "test -z \"\$(ls '$WORK/p3' 2>/dev/null)\""
expect_error "plot: a file as OUT" "not a directory" "$S2D" plot "$out/metrics.jsonl"
# a run still in progress has only its metrics temp file (metrics.jsonl is renamed into place at the end)
mkdir -p "$WORK/live" && cp "$out/metrics.jsonl" "$WORK/live/metrics.jsonl.tmp.4242"
check "plot: a run in progress" bash -c "'$S2D' plot '$WORK/live' 2>&1 >/dev/null | grep -q 'metrics.jsonl.tmp.4242: a run in progress'"
check "plots of the run in progress" valid_pngs "$WORK/live/plots" 4

# 3. --overwrite removes the earlier run's event files; logging.tensorboard: false writes none
check "overwrite run without tensorboard" "$S2D" train "$cfg" --out "$out" "${SETS[@]}" --overwrite \
  --set logging.tensorboard=false --set pipeline[0].steps=1 --set pipeline[2].steps=1 --set pipeline[3].steps=1 \
  >/dev/null 2>&1
check "no event files after --overwrite with logging.tensorboard: false" \
  bash -c "test -z \"\$(ls '$out/tensorboard' 2>/dev/null)\" && test -s '$out/metrics.jsonl'"
check "the resolved config records logging.tensorboard" grep -q "tensorboard: false" "$out/config.yaml"
summary
