#!/usr/bin/env bash
# Output paths (issue 13): an output is renamed into place only over a regular file. eval --out through a
# symlink replaces the link's target and keeps the link; a FIFO or a device node is written through and stays
# what it was (it used to be replaced by a regular file: `--out /dev/null` as root broke /dev/null). The device
# here is a private null node made with mknod, never the real /dev/null.
. "$(dirname "$0")/lib.sh"
cd "$WORK" || exit 1
TOK="$S2D_ROOT/tests/fixtures/data/tiny_tokenizer"
"$S2D" init-model --preset qwen3-tiny --out m --seed 3 2>/dev/null
printf '%s\n' '{"q": "What is 1+1?", "a": "2"}' '{"q": "What is 2+2?", "a": "4"}' >q.jsonl
run_eval() { timeout 60 "$S2D" eval --model m --tokenizer "$TOK" --data q.jsonl --format generic --prompt-field q \
  --answer-field a --samples 2 --max-new-tokens 4 --out "$1" >/dev/null 2>>err.txt; }

check "plain file output" run_eval plain.jsonl
check "plain file has 4 samples" test "$(wc -l <plain.jsonl)" -eq 4

echo old >target.jsonl; ln -s target.jsonl link.jsonl
check "symlink output" run_eval link.jsonl
check "symlink: still a symlink to the same target" test -L link.jsonl -a "$(readlink link.jsonl)" = target.jsonl
check "symlink: the target holds the samples" test "$(wc -l <target.jsonl)" -eq 4
check "symlink: no temp files left" bash -c '! ls | grep -q "\.tmp\."'

mkfifo fifo.jsonl
cat fifo.jsonl >from_fifo.txt & reader=$!
check "FIFO output" run_eval fifo.jsonl
wait $reader
check "FIFO: still a FIFO" test -p fifo.jsonl
check "FIFO: the reader got the samples" test "$(wc -l <from_fifo.txt)" -eq 4

if mknod null c 1 3 2>/dev/null; then
  check "device output" run_eval null
  check "device: still a character device" test -c null
  check "device: no temp files left" bash -c '! ls | grep -q "\.tmp\."'
else
  echo "SKIP: mknod not permitted here: device-node output not checked"
fi
mkdir adir
expect_error "a directory as --out" "adir: is a directory" "$S2D" eval --model m --tokenizer "$TOK" --data q.jsonl \
  --format generic --prompt-field q --answer-field a --samples 1 --max-new-tokens 2 --out adir
summary
