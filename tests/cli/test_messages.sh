#!/usr/bin/env bash
# Errors that misled (issue 13): logprobs took the id 2.0 as 2; tokenize printed line 1 before failing on
# line 2; eval named no line for an over-long prompt; eval --samples 1 printed "pass@1" twice (invalid as a JSON object); an eos_token_id outside the
# vocabulary loaded and generate blamed --stop; a failing Oniguruma search named no stdin:LINE; \u0000 in an added token cut it;
# huge num_hidden_layers, hidden_size, max_position_embeddings or prompts_per_step asked for gigabytes before any
# check and then said "out of memory" with no file or key.
. "$(dirname "$0")/lib.sh"
cd "$WORK" || exit 1
TOK="$S2D_ROOT/tests/fixtures/data/tiny_tokenizer"
"$S2D" init-model --preset qwen3-tiny --out m --seed 3 2>/dev/null
expect_error "logprobs: id 2.0" "stdin:2: element 1 is not an integer token id" \
  bash -c "printf '[1, 2]\n[1, 2.0]\n' | '$S2D' logprobs --model m"
expect_error "logprobs: id 2e0" "stdin:1: element 2 is not an integer token id" \
  bash -c "printf '[1, 2, 2e0]\n' | '$S2D' logprobs --model m"
check "logprobs: integers still fine" bash -c "printf '[1, 2, 3]\n' | '$S2D' logprobs --model m 2>/dev/null | grep -q '^\['"
out=$(printf '"ok"\n[1]\n' | "$S2D" tokenize --tokenizer "$TOK" 2>err.txt); rc=$?
check "tokenize: bad line 2 fails" test $rc -ne 0
check "tokenize: names stdin:2" grep -q "stdin:2:" err.txt
check "tokenize: nothing printed for line 1" test -z "$out"
check "tokenize: good input still prints" bash -c "printf '\"ok\"\n' | '$S2D' tokenize --tokenizer '$TOK' 2>/dev/null | grep -q '^\['"
# a pre-tokenizer regex that backtracks past Oniguruma's retry limit: the failing line is named
mkdir ptk; python3 - "$TOK/tokenizer.json" ptk/tokenizer.json <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
t["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": "^(a+)+$"}, "behavior": "Isolated", "invert": False},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
json.dump(t, open(sys.argv[2], "w"))
PY
expect_error "Oniguruma search failure names stdin:LINE" \
  "stdin:2: encode: the pre-tokenizer regex of ptk/tokenizer.json failed on this text: retry-limit-in-match over" \
  bash -c "printf '\"ok\"\n\"%s!\"\n' \$(printf 'a%.0s' \$(seq 60)) | '$S2D' tokenize --tokenizer ptk"
# \u0000 in an added token used to cut its content silently
mkdir nul; python3 - "$TOK/tokenizer.json" nul/tokenizer.json <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
t["added_tokens"].append({"id": len(t["model"]["vocab"]) + len(t["added_tokens"]), "content": "<a\u0000b>",
                          "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True})
open(sys.argv[2], "w").write(json.dumps(t, indent=1))
PY
expect_error "\\u0000 in a tokenizer: error with file:line" "nul/tokenizer.json:[0-9]+: the escape \\\\u0000 \(U\+0000\) is not supported" \
  bash -c "echo '\"hi\"' | '$S2D' tokenize --tokenizer nul"
printf '%s\n' '{"q": "What is 1+1?", "a": "2"}' >q.jsonl
sum=$("$S2D" eval --model m --tokenizer "$TOK" --data q.jsonl --format generic --prompt-field q --answer-field a \
  --samples 1 --max-new-tokens 2 2>/dev/null)
check "eval --samples 1: pass@1 once" test "$(grep -o '"pass@1"' <<<"$sum" | wc -l)" -eq 1
check "eval --samples 1: valid JSON with unique keys" python3 -c '
import json, sys
pairs = json.loads(sys.argv[1], object_pairs_hook=lambda p: p)
keys = [k for k, _ in pairs]
assert len(keys) == len(set(keys)), keys' "$sum"
python3 -c 'import json; print(json.dumps({"q": "short", "a": "1"})); print(json.dumps({"q": "word " * 3000, "a": "1"}))' >long.jsonl
expect_error "eval: an over-long prompt names its line" "long.jsonl:2: the prompt has [0-9]+ tokens .*more than the model's max_position_embeddings 2048" \
  "$S2D" eval --model m --tokenizer "$TOK" --data long.jsonl --format generic --prompt-field q --answer-field a --samples 1 --max-new-tokens 2
cp -r m e; python3 - e/config.json <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["eos_token_id"] = 600; json.dump(c, open(sys.argv[1], "w"))
PY
expect_error "eos_token_id outside the vocabulary" "e/config.json: key 'eos_token_id' holds 600, outside the vocabulary \[0, 512\)" \
  bash -c "echo '[1, 2]' | '$S2D' generate --model e --max-new-tokens 2"
# huge shapes in config.json are checked against the weights' headers before anything is allocated (they asked
# for gigabytes, then said "out of memory: N bytes" with no file or key)
bad_shape() { # name, key, value: a copy of m with config.json's key set to value
  cp -r m "$1"; python3 - "$1/config.json" "$2" "$3" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c[sys.argv[2]] = int(sys.argv[3]); json.dump(c, open(sys.argv[1], "w"))
PY
}
bad_shape L num_hidden_layers 100000
expect_error "huge num_hidden_layers names the key" "L/config.json: key 'num_hidden_layers' is 100000, but the weights in L hold 2 layers \(no tensor 'model.layers.2" \
  bash -c "echo '[1, 2]' | '$S2D' logprobs --model L"
bad_shape H hidden_size 1000000
expect_error "huge hidden_size names the key" "H/config.json: key 'hidden_size' 1000000 does not match the weights: tensor 'model.embed_tokens.weight' in H/model.safetensors has shape \[512, 64\], config.json implies \[512, 1000000\]" \
  bash -c "echo '[1, 2]' | '$S2D' logprobs --model H"
bad_shape I intermediate_size 100000000
expect_error "huge intermediate_size names the key" "I/config.json: key 'intermediate_size' 100000000 does not match the weights" \
  bash -c "echo '[1, 2]' | '$S2D' generate --model I --max-new-tokens 2"
bad_shape A num_attention_heads 4000
expect_error "huge num_attention_heads names the keys" "A/config.json: keys 'num_attention_heads' x 'head_dim' 4000 x 32 does not match" \
  bash -c "echo '[1, 2]' | '$S2D' logprobs --model A"
# no weights bound max_position_embeddings: its RoPE tables (16 bytes a position x head_dim/2) against memory
bad_shape P max_position_embeddings 2000000000
expect_error "huge max_position_embeddings names the key" "P/config.json: key 'max_position_embeddings' 2000000000: its RoPE tables need 512.00 GB .*more than the .* GB available" \
  bash -c "echo '[1, 2]' | '$S2D' logprobs --model P"
# a step's buffers against memory, before anything is written: the key, the bound and how many prompts fit
sed "s#tests/fixtures/models#$S2D_ROOT/tests/fixtures/models#" "$S2D_ROOT/configs/tests/tiny-pipeline.yaml" >tiny.yaml
HUGE=(--set 'pipeline[1].fkl.mode=full' --set 'pipeline[1].prompts_per_step=65536' --set 'pipeline[1].group_size=4096')
expect_error "huge prompts_per_step names the key and the bound" "tiny.yaml:[0-9]+:[0-9]+: pipeline\[1\].prompts_per_step: 65536 prompts x group_size 4096 x \(1 \+ max_new_tokens 20\) tokens x the full vocabulary \(fkl.mode: full\) need at least 11766.1 GB for the step's buffers, more than the [0-9.]+ GB available \(.*\): at most [0-9]+ prompts a step fit" \
  "$S2D" train tiny.yaml --out huge "${HUGE[@]}"
check "huge prompts_per_step: nothing written" test ! -e huge
check "huge prompts_per_step: --dry-run warns" bash -c "'$S2D' train tiny.yaml --out huge --dry-run ${HUGE[*]} 2>&1 >/dev/null | grep -q 'warn.*pipeline\[1\].prompts_per_step: 65536 prompts'"
summary
