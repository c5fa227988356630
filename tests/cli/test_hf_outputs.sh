#!/usr/bin/env bash
# Stage outputs are Hugging Face directories: config, weights in the source's dtype (bf16 in, bf16 out),
# generation_config.json, and the tokenizer side (its tokenizer_config.json copied, or a minimal one written).
. "$(dirname "$0")/lib.sh"
export S2D_LOG=warn OMP_NUM_THREADS=1
cd "$WORK" || exit 1
"$S2D" init-model --preset qwen3-tiny --out pol16 --seed 4 --dtype bf16 2>/dev/null
"$S2D" init-model --preset qwen3-tiny --out pol32 --seed 4 2>/dev/null
mkdir -p tokA tokB && cp "$S2D_ROOT/tests/fixtures/models/tiny-teacher/tokenizer.json" tokA/ &&
  cp tokA/tokenizer.json tokB/ && echo '{"eos_token": "mine", "chat_template": "{{ x }}"}' > tokB/tokenizer_config.json
config() { # POLICY TOKDIR
  cat <<YAML
seed: 1
prompt: {template: none, instruction: ""}
models:
  pol: {path: $1, tokenizer: $2}
datasets:
  train: {task: arith, split: train, size: 64, seed: 1, ops: 1, max_operand: 5}
pipeline:
  - name: out
    algo: sft
    policy: pol
    data: train
    steps: 1
    prompts_per_step: 4
    group_size: 1
    sampling: {max_new_tokens: 8}
    optimizer: {lr: 1.0e-3}
YAML
}
dtype_of() { python3 -c "
import json, struct, sys
f = open(sys.argv[1], 'rb'); n = struct.unpack('<Q', f.read(8))[0]; h = json.loads(f.read(n))
print(','.join(sorted({v['dtype'] for k, v in h.items() if k != '__metadata__'})))" "$1"; }
config pol16 tokA > a.yaml
config pol32 tokB > b.yaml
check "train from a bf16 model" "$S2D" train a.yaml --out ra
check "train from an f32 model" "$S2D" train b.yaml --out rb
check "bf16 in, bf16 out" test "$(dtype_of ra/models/out/model.safetensors)" = BF16
check "f32 in, f32 out" test "$(dtype_of rb/models/out/model.safetensors)" = F32
check "config.json says bfloat16 for the bf16 output" python3 -c "import json; assert json.load(open('ra/models/out/config.json'))['torch_dtype'] == 'bfloat16'"
for r in ra rb; do
  check "$r: generation_config.json written" python3 -c "import json; json.load(open('$r/models/out/generation_config.json'))"
  check "$r: tokenizer.json copied" cmp -s tokA/tokenizer.json $r/models/out/tokenizer.json
done
check "a source without tokenizer_config.json gets a minimal one" python3 -c "
import json; c = json.load(open('ra/models/out/tokenizer_config.json')); assert c['tokenizer_class'] == 'PreTrainedTokenizerFast', c"
check "the source's tokenizer_config.json (chat template) is copied" cmp -s tokB/tokenizer_config.json rb/models/out/tokenizer_config.json
check "the trained bf16 output still loads and scores" bash -c "echo '[1,2,3]' | '$S2D' logprobs --model ra/models/out | grep -q '^\[-'"
summary
