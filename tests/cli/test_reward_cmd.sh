#!/usr/bin/env bash
# Custom rewards (stage reward: {command, timeout_s}; text/reward_cmd.h): the command's rewards drive GRPO and
# reach metrics.jsonl (reward_mean = the mean of what it returned, extra fields as reward/<name>, also in
# metrics.h5 /reward/<name> and TensorBoard <stage>/reward/<name>), the shipped
# example runs, and a command that misbehaves (garbage, missing reward, NaN, Infinity, exits, killed, too slow)
# ends the run with an error naming the command and the record, without hanging and without leaving the child
# behind; die() (fault injection) and SIGTERM kill it too.
. "$(dirname "$0")/lib.sh"
PY=python3
python3 -c 'import h5py' 2>/dev/null || PY=/usr/bin/python3
cd "$WORK" || exit 1
MODEL="$S2D_ROOT/tests/fixtures/models/tiny-teacher"
config() { # reward command, timeout_s, steps, [extra top-level yaml]
  cat <<EOF
seed: 3
prompt: {template: qwen3, instruction: ""}
models:
  teacher: {path: $MODEL}
datasets:
  train: {task: arith, split: train, size: 64, seed: 1, ops: 2, max_operand: 5}
pipeline:
  - name: rl
    algo: grpo
    policy: teacher
    data: train
    steps: $3
    prompts_per_step: 4
    group_size: 2
    sampling: {temperature: 1.0, max_new_tokens: 12}
    reward: {command: "$1", timeout_s: $2}
logging: {rollouts: false, metrics_h5: false}
${4:-}
EOF
}
# no process whose command line holds $1 is left (within 3 s: a SIGKILLed process in uninterruptible IO, e.g.
# python starting under heavy load, dies when the IO returns)
no_orphan() {
  for _ in $(seq 1 30); do pgrep -f "$1" >/dev/null || return 0; sleep 0.1; done
  ps -eo pid,pgid,ppid,stat,cmd | grep -F -- "$1" | grep -v grep >&2
  return 1
}

# 1. a deterministic reward from the response; the script logs what it returned (one line per record)
cat >score.py <<'EOF'
import json, sys
log = open(sys.argv[1], "a")
for line in sys.stdin:
    r = json.loads(line)
    assert set(r) == {"id", "prompt", "response", "answer"}, r
    assert r["prompt"] and r["answer"], r
    v = (len(r["response"]) % 5) / 4.0 - 0.25
    log.write("%r %d %s\n" % (v, len(r["response"]), r["id"])); log.flush()
    print(json.dumps({"reward": v, "chars": len(r["response"]), "long": len(r["response"]) > 20, "note": "x",
                      "sub/n": 2}), flush=True)
EOF
config "python3 $WORK/score.py $WORK/log.txt" 10 3 | sed 's/metrics_h5: false/metrics_h5: true/' >ok.yaml
"$S2D" train ok.yaml --out run1 >out.txt 2>err.txt
check "run with a reward command succeeds ($(tail -2 err.txt))" test -s run1/metrics.jsonl
check "24 records scored (3 steps x 8)" test "$(wc -l <log.txt 2>/dev/null)" = 24
check "metrics: reward_mean and reward/<name> are the command's per-step means" python3 - run1/metrics.jsonl log.txt <<'EOF'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"step"' in l and '"event"' not in l]
log = [l.split() for l in open(sys.argv[2])]
assert len(steps) == 3, steps
for k, s in enumerate(steps):
    part = log[8 * k: 8 * k + 8]
    mean = sum(float(v) for v, _, _ in part) / 8
    chars = sum(int(c) for _, c, _ in part) / 8
    longf = sum(int(c) > 20 for _, c, _ in part) / 8
    assert abs(s["reward_mean"] - mean) < 1e-5, (k, s["reward_mean"], mean)
    assert abs(s["reward/chars"] - chars) < 1e-4 * max(1, chars), (k, s["reward/chars"], chars)
    assert abs(s["reward/long"] - longf) < 1e-6, (k, s["reward/long"], longf)
    assert "reward/note" not in s and "reward/reward" not in s, s
# the built-in verifier's accuracy stays next to it
    assert 0 <= s["accuracy"] <= 1
EOF
check "metrics.h5 /reward/<name> and TensorBoard <stage>/reward/<name> equal metrics.jsonl" "$PY" - run1 \
  "$S2D_ROOT/tests/cli/tb_read.py" <<'EOF'
import glob, json, math, subprocess, sys, h5py
d, reader = sys.argv[1], sys.argv[2]
steps = [json.loads(l) for l in open(f"{d}/metrics.jsonl") if '"step"' in l and '"event"' not in l]
with h5py.File(f"{d}/metrics.h5", "r") as f:
    assert sorted(f["reward"].keys()) == ["chars", "long", "sub%2Fn"], list(f["reward"].keys())
    for name, key in (("chars", "reward/chars"), ("long", "reward/long"), ("sub%2Fn", "reward/sub/n")):
        col = f["reward"][name][()]
        assert len(col) == len(f["step"][()]) == 3, (name, len(col))
        for k, s in enumerate(steps):
            assert abs(col[k] - s[key]) <= 1e-5 * max(1, abs(s[key])), (name, k, col[k], s[key])
ev = glob.glob(f"{d}/tensorboard/events.out.tfevents.*")
assert len(ev) == 1, ev
out = subprocess.run([sys.executable, reader, ev[0]], capture_output=True, text=True, check=True).stdout
tb = {}
for l in out.splitlines()[1:]:
    r = json.loads(l)
    tb.setdefault(r["tag"], []).append(r["value"])
for key in ("reward/chars", "reward/long", "reward/sub/n"):
    got, want = tb.get("rl/" + key), [s[key] for s in steps]
    assert got is not None and len(got) == 3, (key, sorted(tb))
    assert all(abs(a - b) <= 1e-5 * max(1, abs(b)) for a, b in zip(got, want)), (key, got, want)
EOF
check "the child is gone after a clean run" no_orphan "$WORK/score.py"
check "the resolved config holds reward.command and timeout_s" bash -c \
  "grep -A1 '^    command: \"python3 $WORK/score.py $WORK/log.txt\"\$' run1/config.yaml | grep -q '^    timeout_s: 10\$'"
# the rewards drive the update: the varying ones above give a loss, a constant reward (zero advantages) none
check "varying rewards: a non-zero loss" grep -qE '"loss": -?[0-9.]*[1-9]' run1/metrics.jsonl
cat >const.py <<'EOF'
import sys
for line in sys.stdin: print('{"reward": 0.5}', flush=True)
EOF
config "python3 $WORK/const.py" 10 1 >const.yaml
"$S2D" train const.yaml --out run2 >/dev/null 2>err2.txt
check "constant reward: reward_mean 0.5, loss 0 ($(tail -1 err2.txt))" \
  grep -q '"loss": 0, "reward_mean": 0.5,' run2/metrics.jsonl

# 2. the shipped example (stdlib only)
config "python3 $S2D_ROOT/examples/reward_length_penalty.py" 10 1 >ex.yaml
"$S2D" train ex.yaml --out run3 >/dev/null 2>err3.txt
check "examples/reward_length_penalty.py: reward/correct and reward/length reach the metrics ($(tail -1 err3.txt))" \
  grep -q '"reward/correct": [0-9.e-]*, "reward/length": [0-9.e+-]*, "reward/penalty": ' run3/metrics.jsonl

# 3. misbehaving commands: a clear error naming the command and the record; exit != 0; no hang; no orphan
bad() { # name, python body, expected error pattern, [timeout_s]
  local name=$1 body=$2 pattern=$3 tmo=${4:-10}
  printf 'import sys, json, time, os, signal\n%s\n' "$body" >"$name.py"
  config "python3 $WORK/$name.py" "$tmo" 2 >"$name.yaml"
  local t0=$SECONDS
  expect_error "$name: error names the command and the record" \
    "reward command \"python3 $WORK/$name.py\", stage rl step 1: datasets.train record [0-9]+, sample 0 \(id [0-9]+\): .*$pattern" \
    timeout 60 "$S2D" train "$name.yaml" --out "run-$name"
  check "$name: no hang ($((SECONDS - t0)) s)" test $((SECONDS - t0)) -lt 45
  check "$name: no reward process left" no_orphan "$WORK/$name.py"
}
bad garbage 'for l in sys.stdin: print("hello", flush=True)' "the reply is not valid JSON: hello"
bad noreward 'for l in sys.stdin: print(json.dumps({"score": 1}), flush=True)' 'no numeric "reward"'
bad strreward 'for l in sys.stdin: print(json.dumps({"reward": "1"}), flush=True)' 'no numeric "reward"'
bad nan 'for l in sys.stdin: print(json.dumps({"reward": float("nan")}), flush=True)' "non-finite number"
bad huge 'for l in sys.stdin: print("{\"reward\": 1e999}", flush=True)' '"reward" is not finite'
bad exits 'sys.stdin.readline(); sys.exit(3)' "exited with status 3"
bad killed 'sys.stdin.readline(); os.kill(os.getpid(), signal.SIGKILL)' "(killed by signal 9|status 137 \\(the shell's report of signal 9)"
bad slow 'sys.stdin.readline(); time.sleep(120)' "no reply from the command within 0.5 s \(timeout\)" 0.5
bad badname 'for l in sys.stdin: print(json.dumps({"reward": 1, "a b": 2}), flush=True)' 'is not a metric name'

# 4. the job's own fatal errors kill the child: die() (fault injection) and SIGTERM
cat >idle.py <<'EOF'
import sys, json, time
for l in sys.stdin: print(json.dumps({"reward": 1}), flush=True)
time.sleep(300)  # ignores end of input: only a kill ends it
EOF
config "python3 $WORK/idle.py --die" 10 3 "fault: {rank: 0, at_step: 2, kind: error}" >die.yaml
# (stderr to a file: a child left holding it would make $(...) wait for it instead of failing)
timeout 60 "$S2D" train die.yaml --out run-die >/dev/null 2>die.err
rc=$?
check "die() at step 2 (status $rc)" bash -c "[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q 'injected fault' die.err"
check "die(): no reward process left" no_orphan "$WORK/idle.py --die"
cat >sleepy.py <<'EOF'
import sys, time
sys.stdin.readline(); time.sleep(300)
EOF
config "python3 $WORK/sleepy.py" 200 2 >term.yaml
"$S2D" train term.yaml --out run-term >/dev/null 2>term.err &
pid=$!
for _ in $(seq 1 200); do pgrep -f "$WORK/sleepy.py" >/dev/null && break; sleep 0.1; done
check "the reward command is running" bash -c "pgrep -f '$WORK/sleepy.py' >/dev/null"
sleep 0.5
kill -TERM $pid
wait $pid
rc=$?
check "SIGTERM ends the run (status $rc)" test $rc -ne 0
check "SIGTERM: no reward process left" no_orphan "$WORK/sleepy.py"

# 5. config errors
config "" 10 1 >empty.yaml
expect_error "empty command" "reward.command is empty" "$S2D" train empty.yaml --dry-run --out x
config "python3 x.py" 0 1 >tmo.yaml
expect_error "timeout_s out of range" "timeout_s" "$S2D" train tmo.yaml --dry-run --out x
sed 's/reward: {command: "python3 x.py", timeout_s: 0}/reward: {timeout_s: 3}/' tmo.yaml >nocmd.yaml
expect_error "missing command" "reward: missing key 'command'" "$S2D" train nocmd.yaml --dry-run --out x
summary
