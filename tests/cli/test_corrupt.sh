#!/usr/bin/env bash
# Damaged checkpoints (issue 13): a byte flipped in a tensor, in the AdamW moments or anywhere in the file is
# named (file + dataset) by export, never crashes inspect / export (strings are fixed-length, HDF5 structure is
# sealed by s2d before libhdf5 reads it, data has a per-dataset checksum), and train --resume falls back to the
# newest intact checkpoint with a warning naming the damaged one.
. "$(dirname "$0")/lib.sh"
cd "$S2D_ROOT" || exit 1
export OMP_NUM_THREADS=1
PY=
for p in python3 /usr/bin/python3; do if "$p" -c 'import h5py' 2>/dev/null; then PY=$p; break; fi; done
if [ -z "$PY" ]; then echo "SKIP: no python3 with h5py (needed to find dataset offsets)"; summary; exit; fi
cfg=configs/tests/tiny-pipeline.yaml
SETS=()
for i in 0 1 2 3; do SETS+=(--set "pipeline[$i].steps=3" --set "pipeline[$i].prompts_per_step=8"); done
train() { "$S2D" train $cfg "${SETS[@]}" "$@"; }
# global steps 1-3 teacher_rl, 4-6 bridge_fkl, 7-9 bridge_opd (checkpoint every 2): stop after step 8
train --out "$WORK/r" --set fault.stop_after_step=8 >/dev/null 2>"$WORK/r.err" || { cat "$WORK/r.err"; fail "setup run"; summary; exit; }
ck=$WORK/r/checkpoints
new=$ck/ckpt-02-000000002.h5 old=$ck/ckpt-01-000000003.h5
check "setup: checkpoints written" test -s "$new" -a -s "$old"
# flip FILE DATASET [BYTE]: xor 0x10 into byte BYTE (default 5) of DATASET's data in FILE
flip() {
  "$PY" - "$@" <<'PY'
import sys, h5py
path, name = sys.argv[1], sys.argv[2]
k = int(sys.argv[3]) if len(sys.argv) > 3 else 5
with h5py.File(path, "r") as f:
    off = f[name].id.get_offset()
with open(path, "r+b") as fp:
    fp.seek(off + k); b = fp.read(1); fp.seek(off + k); fp.write(bytes([b[0] ^ 0x10]))
PY
}
mkdir -p "$WORK/x"
# 0. the seal: inspect reports it; cut back to the HDF5 bytes (a file from before seals) it still loads
check "inspect: the checkpoint is sealed" bash -c "'$S2D' inspect '$new' | grep -q '^seal: intact'"
cp "$new" "$WORK/x/u.h5"
"$PY" - "$WORK/x/u.h5" <<'PY'
import os, struct, sys
p = sys.argv[1]
with open(p, "rb") as f:
    f.seek(-56, 2); foot = f.read()
assert foot[:8] == foot[48:] == b"S2DSEAL1"
os.truncate(p, struct.unpack("<Q", foot[32:40])[0])
PY
check "inspect: an unsealed checkpoint says so" bash -c "'$S2D' inspect '$WORK/x/u.h5' | grep -q '^seal: none'"
check "an unsealed checkpoint exports" "$S2D" export "$WORK/x/u.h5" --model bridge_opd --out "$WORK/x/ue"

# 1. a tensor: export names the file and the dataset
cp "$new" "$WORK/x/t.h5"
flip "$WORK/x/t.h5" models/bridge_opd/model.embed_tokens.weight
check "intact checkpoint exports" "$S2D" export "$new" --model bridge_opd --out "$WORK/x/ok"
expect_error "flipped tensor byte: export names file and dataset" \
  "x/t.h5: dataset /models/bridge_opd/model.embed_tokens.weight is corrupted" \
  "$S2D" export "$WORK/x/t.h5" --model bridge_opd --out "$WORK/x/e1"
check "flipped tensor byte: no export directory" test ! -e "$WORK/x/e1"
check "flipped tensor byte: inspect still summarises the file" bash -c "'$S2D' inspect '$WORK/x/t.h5' >/dev/null"

# 2. text, state and moments
cp "$new" "$WORK/x/c.h5"; flip "$WORK/x/c.h5" config 3
cp "$new" "$WORK/x/m.h5"; flip "$WORK/x/m.h5" optim/bridge_opd/m 1
cp "$new" "$WORK/x/s.h5"; flip "$WORK/x/s.h5" state/run.global_step 0
for k in c m s; do
  cp -r "$WORK/r" "$WORK/r$k"; cp "$WORK/x/$k.h5" "$WORK/r$k/checkpoints/ckpt-02-000000002.h5"
done

# 3. --resume falls back to the newest intact checkpoint, naming the damaged one
cp -r "$WORK/r" "$WORK/rt"; cp "$WORK/x/t.h5" "$WORK/rt/checkpoints/ckpt-02-000000002.h5"
check "resume past a damaged tensor" train --out "$WORK/rt" --resume >/dev/null 2>"$WORK/rt.err"
check "resume warned about the damaged checkpoint and dataset" \
  grep -q "skipping damaged or incomplete checkpoint .*ckpt-02-000000002.h5: dataset /models/bridge_opd/model.embed_tokens.weight is corrupted" "$WORK/rt.err"
check "resume fell back to the stage-boundary checkpoint" grep -q "resuming from .*ckpt-01-000000003.h5" "$WORK/rt.err"
check "resumed run finished" test -s "$WORK/rt/models/student_rl/model.safetensors"
for k in m c s; do
  rd=$WORK/r$k
  want=$([ $k = m ] && echo "/optim/bridge_opd/m is corrupted" || { [ $k = c ] && echo "/config is corrupted" || echo "/state/run.global_step is corrupted"; })
  train --out "$rd" --resume --set fault.stop_after_step=10 >/dev/null 2>"$rd.err"
  check "resume past damaged $k: warns naming it" grep -q "ckpt-02-000000002.h5: dataset $want" "$rd.err"
  check "resume past damaged $k: used the older checkpoint" grep -q "resuming from .*ckpt-01-000000003.h5" "$rd.err"
done
# every checkpoint damaged: a clear error
cp -r "$WORK/r" "$WORK/rall"
for f in "$WORK/rall/checkpoints"/*.h5; do flip "$f" state/run.global_step 0; done
expect_error "no intact checkpoint: error" "nothing to resume: no complete, intact checkpoint" train --out "$WORK/rall" --resume

# 4. random single-byte flips anywhere in the file: never a crash (exit < 128), and export either fails with
# an error naming the file or (a flip in unused bytes) succeeds
size=$(stat -c %s "$new")
crashes=0 silent=0
for i in $(seq 1 80); do
  off=$(( (i * 2654435761) % size ))
  cp "$new" "$WORK/x/f.h5"
  printf "$(printf '\\x%02x' $(( (i * 37 + 1) % 256 )))" | dd of="$WORK/x/f.h5" bs=1 seek=$off conv=notrunc status=none
  for cmd in "inspect $WORK/x/f.h5" "export $WORK/x/f.h5 --model bridge_opd --out $WORK/x/fe"; do
    $S2D $cmd >/dev/null 2>"$WORK/x/f.err"; rc=$?
    if [ $rc -ge 128 ]; then crashes=$((crashes + 1)); echo "crash ($rc) at byte $off: $cmd" >&2; fi
    if [ $rc -ne 0 ] && ! grep -q "f.h5" "$WORK/x/f.err"; then silent=$((silent + 1)); echo "unnamed error at byte $off: $(cat "$WORK/x/f.err")" >&2; fi
  done
  rm -rf "$WORK/x/fe"
done
check "random flips: no crash ($crashes)" test $crashes -eq 0
check "random flips: every error names the file ($silent unnamed)" test $silent -eq 0
summary
