#!/usr/bin/env bash
# Non-finite weights (issue 13): a NaN or Inf in model.safetensors is a load error naming the file and the
# tensor; finite but huge weights that overflow make logprobs fail naming the stdin line, never print
# 1e999 / nan (not JSON); a training run whose loss goes non-finite stops naming stage and step, with the last
# checkpoint intact.
. "$(dirname "$0")/lib.sh"
cd "$WORK" || exit 1
"$S2D" init-model --preset qwen3-tiny --out m --seed 3 2>/dev/null
check "init-model" test -f m/model.safetensors
# poke DIR TENSOR INDEX HEXBITS...: overwrite float32 elements INDEX.. of TENSOR with the given bit patterns
poke() {
  python3 - "$@" <<'PY'
import json, struct, sys
d, name, idx = sys.argv[1], sys.argv[2], int(sys.argv[3])
path = d + "/model.safetensors"
raw = bytearray(open(path, "rb").read())
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n])[name]
assert h["dtype"] == "F32"
a, b = h["data_offsets"]
vals = [int(x, 16) for x in sys.argv[4:]]
if len(vals) == 1 and vals[0] == 0x7f000000:  # fill the whole tensor with a huge finite value
    vals = vals * ((b - a) // 4 - idx)
for k, v in enumerate(vals):
    struct.pack_into("<I", raw, 8 + n + a + 4 * (idx + k), v)
open(path, "wb").write(raw)
PY
}
echo '[1, 2, 3]' >ids.jsonl
cp -r m nan; poke nan model.layers.1.mlp.down_proj.weight 17 7fc00000
expect_error "NaN weight: load error names file and tensor" \
  "nan/model.safetensors: tensor 'model.layers.1.mlp.down_proj.weight' holds a non-finite value \(nan at flat index 17\)" \
  "$S2D" logprobs --model nan <ids.jsonl
cp -r m inf; poke inf model.norm.weight 0 ff800000
expect_error "-Inf weight: load error names file and tensor" \
  "inf/model.safetensors: tensor 'model.norm.weight' holds a non-finite value \(-inf at flat index 0\)" \
  "$S2D" generate --model inf --max-new-tokens 2 <ids.jsonl
cp -r m huge; poke huge model.embed_tokens.weight 0 7f000000
out=$("$S2D" logprobs --model huge <ids.jsonl 2>err.txt); rc=$?
check "overflowing log-probs: an error, not output" test $rc -ne 0
check "overflowing log-probs: nothing like 1e999 or nan printed" bash -c "! grep -qiE '1e999|nan' <<<'$out'"
check "overflowing log-probs: the error names stdin and the line" grep -q "stdin:1: the log-prob at position .* is not finite" err.txt
# generate on the same model: greedy printed "logprobs": [nan, ...] (not JSON) and exited 0
out=$("$S2D" generate --model huge --max-new-tokens 2 --temperature 0 --details <ids.jsonl 2>err.txt); rc=$?
check "overflowing generate (greedy): an error, nothing printed" test $rc -ne 0 -a -z "$out"
check "overflowing generate (greedy): the error names stdin and the line" grep -q "stdin:1: the log-prob of generated token 0 is not finite" err.txt
out=$("$S2D" generate --model huge --max-new-tokens 2 --temperature 1 --details <ids.jsonl 2>err.txt); rc=$?
check "overflowing generate (sampled): an error, nothing printed" test $rc -ne 0 -a -z "$out"

cd "$S2D_ROOT" || exit 1
SETS=()
for i in 0 1 2 3; do SETS+=(--set "pipeline[$i].steps=3" --set "pipeline[$i].prompts_per_step=8"); done
OMP_NUM_THREADS=1 "$S2D" train configs/tests/tiny-pipeline.yaml "${SETS[@]}" --set 'pipeline[3].optimizer={lr: 10, clip: 0}' --set pipeline[3].minibatches=2 \
  --set pipeline[3].policy=teacher_rl --set pipeline[3].grpo.kl_estimator=k3 \
  --out "$WORK/div" >/dev/null 2>"$WORK/div.err"; rc=$?
check "diverging run: exit status is an error ($rc)" test $rc -ne 0 -a $rc -lt 128
check "diverging run: names stage, step and what" grep -qE "\[student_rl\] stage 3, step [0-9]+: training diverged: loss .*kl .*grad_norm" "$WORK/div.err"
check "diverging run: no student_rl model saved" test ! -e "$WORK/div/models/student_rl"
check "diverging run: the last checkpoint is intact" "$S2D" export "$WORK/div/checkpoints/ckpt-02-000000003.h5" --model bridge_opd --out "$WORK/div-exp"
summary
