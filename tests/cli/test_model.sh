#!/usr/bin/env bash
# s2d init-model + s2d logprobs: round trip, determinism, batching independence, bad input, no partial output.
. "$(dirname "$0")/lib.sh"
export S2D_LOG=warn
cd "$WORK"

check "init-model qwen3-tiny" "$S2D" init-model --preset qwen3-tiny --out tiny --seed 5
check "config.json and model.safetensors written" test -s tiny/config.json -a -s tiny/model.safetensors
check "config.json says qwen3 with head_dim 32" grep -q '"head_dim":[[:space:]]*32' tiny/config.json
check "same seed, same bytes" bash -c "'$S2D' init-model --preset qwen3-tiny --out tiny2 --seed 5 && cmp -s tiny/model.safetensors tiny2/model.safetensors"
check "other seed, other weights" bash -c "'$S2D' init-model --preset qwen3-tiny --out tiny3 --seed 6 && ! cmp -s tiny/model.safetensors tiny3/model.safetensors"
check "llama-tiny bf16" "$S2D" init-model --preset llama-tiny --out llama --dtype bf16
check "bf16 file is about half the size" bash -c "[ \$(stat -c %s llama/model.safetensors) -lt \$(( $(stat -c %s tiny/model.safetensors) * 3 / 4 + 70000 )) ]"
check "llama config has llama3 rope" grep -q '"llama3"' llama/config.json

printf '[1,2,3,4,5]\n[7]\n\n[10,11,12]\n[]\n' > in.jsonl
check "logprobs runs" bash -c "'$S2D' logprobs --model tiny < in.jsonl > out.jsonl"
check "one output line per input line (blank skipped)" bash -c "[ \$(wc -l < out.jsonl) -eq 4 ]"
check "n-1 values per line" bash -c "awk -F, 'NR==1{exit !(NF==4)} NR==2{exit !(\$0==\"[]\")} NR==3{exit !(NF==2)} NR==4{exit !(\$0==\"[]\")}' out.jsonl"
# a random init is close to uniform: every log-prob is negative and near -log(512) = -6.24
check "log-probs near -log(vocab)" bash -c "tr -d '[]' < out.jsonl | tr ',' '\n' | awk 'NF{ if (\$1 >= 0 || \$1 < -7.5 || \$1 > -5) bad=1 } END{exit bad}'"
# Packing changes only the GEMM's row count; OpenBLAS may round a row differently for another M on some CPUs
# (seen on AMD EPYC without AVX-512: 1 ulp), so the values must agree to float rounding, not bit for bit.
check "packing does not change results (to float rounding)" bash -c "'$S2D' logprobs --model tiny --batch-tokens 1 < in.jsonl > packed1.jsonl && paste -d' ' <(tr -d '[]' < packed1.jsonl) <(tr -d '[]' < out.jsonl) | awk '{ n = split(\$1, a, \",\"); split(\$2, b, \",\"); for (i = 1; i <= n; i++) { d = a[i] - b[i]; if (d < 0) d = -d; if (d > 2e-6) bad = 1 } } END { exit bad }'"
check "llama bf16 model scores" bash -c "'$S2D' logprobs --model llama < in.jsonl | wc -l | grep -qx 4"

# bad input
expect_error "out-of-range token id names the line" "stdin:2: token id 512" bash -c "printf '[1,2]\n[3,512]\n' | '$S2D' logprobs --model tiny"
expect_error "negative token id" "stdin:1: token id -1" bash -c "printf '[-1,2]\n' | '$S2D' logprobs --model tiny"
expect_error "invalid JSON names the line" "stdin:3" bash -c "printf '[1,2]\n[3]\n[4,\n' | '$S2D' logprobs --model tiny"
expect_error "not an array" "stdin:1" bash -c "printf '{\"a\":1}\n' | '$S2D' logprobs --model tiny"
check "nothing on stdout on bad input" bash -c "! printf '[1,2]\n[3,999]\n' | '$S2D' logprobs --model tiny 2>/dev/null | grep -q ."
mkdir broken && cp tiny/model.safetensors broken/ && echo '{"model_type": "qwen3", "hidden_size": 64,' > broken/config.json
expect_error "malformed config.json" "broken/config.json" bash -c "echo '[1,2]' | '$S2D' logprobs --model broken"
sed 's/"head_dim":[[:space:]]*32/"head_dim": 16/' tiny/config.json > broken/config.json
expect_error "wrong tensor shape names the tensor" "model.layers.0.self_attn.q_proj.weight|q_norm" bash -c "echo '[1,2]' | '$S2D' logprobs --model broken"
mkdir noweights && cp tiny/config.json noweights/
expect_error "missing model.safetensors" "model.safetensors" bash -c "echo '[1,2]' | '$S2D' logprobs --model noweights"
expect_error "missing model dir" "nowhere" "$S2D" logprobs --model nowhere
sed 's/"attention_bias":[[:space:]]*false/"attention_bias": true/' tiny/config.json > broken/config.json
expect_error "attention_bias rejected" "attention_bias" bash -c "echo '[1,2]' | '$S2D' logprobs --model broken"

# init-model failures leave nothing behind
expect_error "unknown preset" "unknown preset 'gpt-9'" "$S2D" init-model --preset gpt-9 --out bad1
check "no dir after unknown preset" test ! -e bad1
expect_error "bad dtype" "dtype" "$S2D" init-model --preset qwen3-tiny --out bad2 --dtype f8
check "no dir after bad dtype" test ! -e bad2
check "missing parents are created" bash -c "'$S2D' init-model --preset qwen3-tiny --out made/parent/x 2>/dev/null && test -s made/parent/x/config.json"
touch afile
expect_error "a parent that is a file: named, no temp path" "cmd_model.c:[0-9]+: --out afile/x: afile exists and is not a directory\$" \
  "$S2D" init-model --preset qwen3-tiny --out afile/x
check "no partial dir or temp files" bash -c "[ -z \"\$(ls -d bad* 2>/dev/null)\" ] && [ -z \"\$(ls -a | grep tmp)\" ]"
expect_error "missing --out" "--out" "$S2D" init-model --preset qwen3-tiny

summary
