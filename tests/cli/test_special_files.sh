#!/usr/bin/env bash
# Inputs that are not regular files (issue 13): a FIFO given as model.safetensors, config.json, tokenizer.json,
# a dataset, a config or a checkpoint is refused at once with an error naming it (it used to hang in open()).
. "$(dirname "$0")/lib.sh"
cd "$WORK" || exit 1
TOK="$S2D_ROOT/tests/fixtures/data/tiny_tokenizer"
"$S2D" init-model --preset qwen3-tiny --out m --seed 3 2>/dev/null
check "init-model" test -f m/config.json
# refused WHAT PATTERN COMMAND...: fails within 10 s (not a hang) naming the FIFO
refused() {
  local what=$1 pattern=$2; shift 2
  expect_error "$what" "$pattern" timeout 10 "$@" </dev/null
}
cp -r m mf; rm mf/model.safetensors; mkfifo mf/model.safetensors
refused "FIFO as model.safetensors" "mf/model.safetensors: not a regular file \(a FIFO\)" \
  "$S2D" logprobs --model mf
cp -r m mc; rm mc/config.json; mkfifo mc/config.json
refused "FIFO as config.json" "mc/config.json: not a regular file \(a FIFO\)" "$S2D" logprobs --model mc
mkdir tk; mkfifo tk/tokenizer.json
refused "FIFO as tokenizer.json" "tk/tokenizer.json: not a regular file \(a FIFO\)" "$S2D" tokenize --tokenizer tk
mkfifo data.jsonl
refused "FIFO as a dataset" "data.jsonl: not a regular file \(a FIFO\)" \
  "$S2D" eval --model m --tokenizer "$TOK" --data data.jsonl --samples 1 --max-new-tokens 4
mkfifo cfg.yaml
refused "FIFO as a train config" "cfg.yaml: not a regular file \(a FIFO\)" "$S2D" train cfg.yaml --dry-run
mkfifo ck.h5
refused "FIFO as a checkpoint (inspect)" "ck.h5: not a regular file \(a FIFO\)" "$S2D" inspect ck.h5
refused "FIFO as a checkpoint (export)" "ck.h5: not a regular file \(a FIFO\)" "$S2D" export ck.h5 --out ex
refused "a directory as model.safetensors" "md/model.safetensors: not a regular file \(a directory\)" \
  bash -c "cp -r m md && rm md/model.safetensors && mkdir md/model.safetensors && '$S2D' logprobs --model md"
summary
