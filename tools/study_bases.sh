#!/usr/bin/env bash
# Are a study's verdicts stable when the seed base changes? Runs `s2d study` at BASES disjoint seed bases of SEEDS
# seeds each (seeds S .. S+SEEDS-1, then S+SEEDS .. S+2*SEEDS-1, ...), all in one directory so that every seed's
# runs are kept and reused, and the pooled study over all SEEDS x BASES seeds. Prints, and writes to
# DIR/bases-<SEEDS>x<BASES>.md, each claim's D +- SE and verdict at every base and pooled, and how many claims get
# the same verdict at every base. DIR/study.md, .json and .png are then the pooled study's.
#   tools/study_bases.sh BUILD CONFIG DIR SEEDS BASES [FIRST_SEED] [s2d study options, e.g. --jobs 2]
set -eu
if [ $# -lt 5 ]; then
  sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
build=$1 config=$2 dir=$3 seeds=$4 bases=$5
first=${6:-1}
shift $(( $# < 6 ? $# : 6 ))
case "$seeds$bases$first" in *[!0-9]*) echo "study_bases: SEEDS, BASES and FIRST_SEED must be whole numbers" >&2; exit 2;; esac
[ "$seeds" -ge 2 ] || { echo "study_bases: SEEDS must be at least 2 (one seed has no SE)" >&2; exit 2; }
[ "$bases" -ge 2 ] || { echo "study_bases: BASES must be at least 2" >&2; exit 2; }
mkdir -p "$dir/bases"
last=$((first + seeds * bases - 1))
# the pooled study first: it trains every seed under one scheduler (no base waits for its slowest run), so the
# bases below only make their reports; it runs again at the end (reports only) to leave DIR/study.* pooled
echo "study_bases: pooled, seeds $first .. $last (trains what is missing)" >&2
"$build"/s2d study "$config" --out "$dir" --seed-base "$first" --seeds $((seeds * bases)) "$@" >/dev/null
for ((b = 0; b < bases; b++)); do
  base=$((first + b * seeds))
  echo "study_bases: seed base $base ($seeds seeds), base $((b + 1)) of $bases" >&2
  "$build"/s2d study "$config" --out "$dir" --seed-base "$base" --seeds "$seeds" "$@" >/dev/null
  cp "$dir/study.json" "$dir/bases/base-$base-$seeds.json"
done
echo "study_bases: pooled, seeds $first .. $last (report)" >&2
"$build"/s2d study "$config" --out "$dir" --seed-base "$first" --seeds $((seeds * bases)) "$@" >/dev/null
python3 - "$dir" "$seeds" "$bases" "$first" <<'EOF'
import json, sys
d, n, k, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
bases = [first + b * n for b in range(k)]
runs = [json.load(open(f'{d}/bases/base-{b}-{n}.json')) for b in bases]
pooled = json.load(open(f'{d}/study.json'))
cell = lambda c: f"{c['difference']:+.2f} ± {c['se']:.2f} {c['verdict']}"
lines = [f"# Verdicts at {k} seed bases of {n} seeds ({runs[0]['study']})", '',
         f"Rule: {pooled['rule']}", '',
         '| claim | ' + ' | '.join(f'base {b}' for b in bases) + f' | pooled ({n * k} seeds) | same at every base |',
         '|---' * (k + 3) + '|']
same = 0
for i, c in enumerate(pooled['claims']):
    cs = [r['claims'][i] for r in runs]
    assert all(x['id'] == c['id'] for x in cs), 'the bases ran other claims'
    one = len({x['verdict'] for x in cs}) == 1
    same += one
    lines.append(f"| {c['id']} | " + ' | '.join(cell(x) for x in cs) + f' | {cell(c)} | {"yes" if one else "no"} |')
lines += ['', f'{same} of {len(pooled["claims"])} claims get the same verdict at all {k} bases of {n} seeds.']
text = '\n'.join(lines) + '\n'
open(f'{d}/bases-{n}x{k}.md', 'w').write(text)
print(text, end='')
EOF
