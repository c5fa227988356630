#!/usr/bin/env bash
# Config bombs (issue 13): YAML that expands far beyond its size must fail fast (well under a second) with a
# clear error naming the file: an alias of a 1 MiB string repeated 10^5 times (bytes, not nodes), nested merge
# keys that double the work per level, and a map of 80k distinct keys (the duplicate-key check is linear).
. "$(dirname "$0")/lib.sh"
cd "$WORK" || exit 1
# fast_error DESCRIPTION PATTERN FILE: s2d train FILE --dry-run fails within 1 s with PATTERN on stderr
fast_error() {
  local what=$1 pattern=$2 file=$3 t0 t1 ms
  t0=$(date +%s%N)
  expect_error "$what" "$pattern" timeout 20 "$S2D" train "$file" --dry-run
  t1=$(date +%s%N); ms=$(( (t1 - t0) / 1000000 ))
  check "$what: fails in ${ms} ms (< 1000)" test $ms -lt 1000
}
python3 - <<'PY'
big = "x" * (1 << 20)
with open("bytes.yaml", "w") as f:
    f.write(f"s: &s {big}\nl:\n")
    f.write("  - *s\n" * 100000)
with open("merge.yaml", "w") as f:
    f.write("m0: &m0 {a: 1, b: 2}\n")
    for i in range(1, 30):
        f.write(f"m{i}: &m{i} {{<<: [*m{i-1}, *m{i-1}]}}\n")
with open("keys.yaml", "w") as f:
    for i in range(80000):
        f.write(f"key{i}: {i}\n")
with open("dupkeys.yaml", "w") as f:
    for i in range(80000):
        f.write(f"key{i}: {i}\n")
    f.write("key17: again\n")
PY
fast_error "alias of a big string, many times" "bytes.yaml:[0-9]+:[0-9]+: l\[[0-9]+\]: more than 64 MiB of values after resolving aliases" bytes.yaml
fast_error "nested merge keys" "merge.yaml:[0-9]+:[0-9]+: .*more than [0-9]+ map entries visited while resolving merge keys" merge.yaml
fast_error "80k keys" "keys.yaml:1:1: \(root\): missing required key" keys.yaml
fast_error "80k keys and a duplicate" "dupkeys.yaml:80001:1: duplicate key 'key17' at key17 \(first defined at line 18" dupkeys.yaml
summary
