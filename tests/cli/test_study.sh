#!/usr/bin/env bash
# s2d study end to end on a micro study (2 arms, 2 seeds, 2 steps a stage, tiny fixture models): the tree of
# runs (each seed's teacher_rl once, shared by both arms), study.md / study.json / study.png, statistics in the
# JSON consistent with the per-seed values, reuse of finished runs, a failing run reported with its log, and
# config errors.
. "$(dirname "$0")/lib.sh"
cd "$WORK" || exit 1
R=$S2D_ROOT
cat >base.yaml <<EOF
seed: 1
prompt: {template: qwen3, instruction: ""}
models:
  teacher: {path: $R/tests/fixtures/models/tiny-teacher}
  student: {path: $R/tests/fixtures/models/tiny-student}
datasets:
  teacher_rl: {task: arith, split: teacher_rl, size: 64, seed: 1, ops: 2, max_operand: 5}
  bridge: {task: arith, split: bridge, size: 64, seed: 1, ops: 2, max_operand: 5}
  student_rl: {task: arith, split: student_rl, size: 64, seed: 1, ops: 2, max_operand: 5}
  test: {task: arith, split: test, size: 40, seed: 1, ops: 2, max_operand: 5}
defaults:
  stage: &stage
    steps: 2
    prompts_per_step: 4
    group_size: 4
    sampling: {temperature: 1.0, max_new_tokens: 16}
    optimizer: {lr: 1.0e-3, clip: 1.0}
pipeline:
  - {<<: *stage, name: teacher_rl, algo: grpo, policy: teacher, data: teacher_rl}
  - {<<: *stage, name: bridge_fkl, algo: fkl, policy: student, teacher: teacher_rl, data: bridge, group_size: 1,
     fkl: {mode: topk, topk: 8}}
  - {<<: *stage, name: student_rl, algo: grpo, policy: bridge_fkl, data: student_rl}
  - {<<: *stage, name: direct, algo: grpo, policy: student, data: teacher_rl}
EOF
cat >study.yaml <<EOF
base: base.yaml
seeds: 2
jobs: 2
prefix: [teacher_rl]
start: teacher_rl
eval: {data: test, samples: 2, max_new_tokens: 16}
arms:
  - {name: s2d, stages: [bridge_fkl, student_rl]}
  - {name: direct, stages: [direct, student_rl], set: ["student_rl.policy=direct"]}
claims:
  - {id: bridge_vs_direct, text: "bridge beats direct GRPO", paper: "+3.4", better: s2d, worse: direct}
  - {id: teacher_vs_s2d, text: "teacher above the student", paper: "-", better: teacher_rl, worse: s2d}
EOF
if "$S2D" study study.yaml --out st >stdout 2>stderr; then
  ok
  check "study.md written and printed" cmp -s stdout st/study.md
  check "study.md states the rule" grep -q "holds\*\* when D > 2 SE" st/study.md
  check "claims table row" grep -qE "^\| bridge_vs_direct: .* \| \+3.4 \| [-+][0-9.]+ \| [0-9.]+ \([0-9.]+, [0-9.]+\) \| [-+][0-9.]+ [-+][0-9.]+ \| (holds|reversed|within noise) \|" st/study.md
  check "claims table: the per-seed differences are study.json's" python3 - <<'EOF'
import json
j = json.load(open('st/study.json'))
rows = {l.split(':')[0][2:]: [c.strip() for c in l.split('|')] for l in open('st/study.md') if l.startswith('| ') and ':' in l}
for c in j['claims']:
    cells = rows[c['id']]
    assert cells[5].split() == ['%+.1f' % (x + 0.0) for x in c['per_seed']], (cells, c['per_seed'])
EOF
  check "arms table rows" grep -qE "^\| direct \| direct → student_rl \| [0-9.]+ ± [0-9.]+ \|" st/study.md
  check "progress lines name the logs" grep -qE "start train .*seed 2 bridge_fkl .*log st/runs/seed2/.*/train.log" stderr
  check "study.png is a PNG" python3 -c "import sys; sys.exit(open('st/study.png','rb').read(8) != b'\x89PNG\r\n\x1a\n')"
  # one teacher_rl per seed, shared by both arms; the two arms' student_rl differ (other policy)
  check "one teacher_rl per seed" test "$(ls -d st/runs/seed*/*-teacher_rl | wc -l)" = 2
  check "two student_rl per seed" test "$(ls -d st/runs/seed1/*-student_rl | wc -l)" = 2
  t1=$(ls -d "$PWD"/st/runs/seed1/*-teacher_rl)
  check "seed 1 bridge reads seed 1's teacher_rl" grep -q "path: \"\?$t1/out/models/teacher_rl" st/runs/seed1/*-bridge_fkl/stage.yaml
  check "study.json statistics" python3 - <<'EOF'
import json, math, statistics as S
j = json.load(open('st/study.json'))
a, b = j['arms']['s2d'], j['arms']['direct']
assert j['seeds'] == [1, 2] and len(a['sampled']) == 2 and len(a['greedy']) == 2
assert [s['stage'] for s in a['after_stage']] == ['bridge_fkl', 'student_rl']
# the final accuracy is the last stage's
assert a['sampled'] == a['after_stage'][-1]['sampled']
d = [x - y for x, y in zip(a['sampled'], b['sampled'])]
c = j['claims'][0]
assert c['id'] == 'bridge_vs_direct' and c['verdict'] in ('holds', 'reversed', 'within noise')
assert abs(c['difference'] - S.mean(d)) < 1e-9, (c, d)
se_seeds = S.stdev(d) / math.sqrt(2)
assert abs(c['se_seeds'] - se_seeds) < 1e-9, (c, se_seeds)
# the problems' part, from the per-problem files of the two arms' final runs (student_rl of each seed)
def probs(path):
    rows = [l.split('\t') for l in open(path).read().splitlines()]
    assert len(rows) == 40 and all(int(r[2]) == 2 for r in rows), path  # 40 test problems x 2 samples
    return [r[0] for r in rows], [100.0 * int(r[1]) / int(r[2]) for r in rows]
import glob, os
def final(seed, policy):  # the student_rl run whose policy is `policy`
    for dd in sorted(glob.glob(f'st/runs/seed{seed}/*-student_rl')):
        if f'/{policy}\n' in open(dd + '/stage.yaml').read() or f'-{policy}/out/models/{policy}' in open(dd + '/stage.yaml').read():
            return dd
A = [probs(final(s, 'bridge_fkl') + '/eval_sampled.problems') for s in (1, 2)]
B = [probs(final(s, 'direct') + '/eval_sampled.problems') for s in (1, 2)]
assert all(x[0] == A[0][0] for x in A + B), 'same problems, same order'
for (ida, va), acc in zip(A, a['sampled']): assert abs(S.mean(va) - acc) < 1e-9, 'per-problem mean = the accuracy'
dd = [[x - y for x, y in zip(A[s][1], B[s][1])] for s in (0, 1)]
m = 40
pm = [(dd[0][i] + dd[1][i]) / 2 for i in range(m)]
rm = [S.mean(r) for r in dd]
g = S.mean(pm)
se_p = S.stdev(pm) / math.sqrt(m)
mse = sum((dd[s][i] - rm[s] - pm[i] + g) ** 2 for s in (0, 1) for i in range(m)) / (1 * (m - 1))
se = math.sqrt(max(se_seeds ** 2 + se_p ** 2 - mse / (2 * m), se_seeds ** 2, se_p ** 2))
assert abs(c['se_problems'] - se_p) < 1e-9, (c, se_p)
assert abs(c['se'] - se) < 1e-9, (c, se)
def verdict_ok(got, d, se):  # a difference at exactly 2 SE (a tie, e.g. 2.5 vs 2 x 1.25) may round either way
    want = 'holds' if d > 2 * se else 'reversed' if d < -2 * se else 'within noise'
    return got == want or (abs(abs(d) - 2 * se) < 1e-9 and got in ('within noise', 'holds' if d > 0 else 'reversed'))
assert verdict_ok(c['verdict'], c['difference'], se), (c, se)
assert verdict_ok(c['verdict_seeds_only'], c['difference'], se_seeds), (c, se_seeds)
assert abs(b['vs_reference']['se'] - se) < 1e-9
assert abs(b['vs_reference']['difference'] + c['difference']) < 1e-9
# labels: both arms draw 2 x 4 labelled prompts in each of two GRPO stages; only s2d uses bridge prompts
for arm in (a, b): assert arm['labels']['rl_total'] == [16, 16], arm['labels']
assert a['labels']['unlabelled_prompts'] == [8, 8] and b['labels']['unlabelled_prompts'] == [0, 0]
assert all(x > 0 for x in a['compute']['rollout_tokens'])
# FLOPs from every run's OUT/budget.json (flops_total), summed over the arm's stages
assert all(isinstance(x, (int, float)) and x > 0 for x in a['compute']['flops'] + b['compute']['flops']), a['compute']
EOF
  check "per-problem files kept, samples folded away" test "$(ls st/runs/*/*/eval_*.problems | wc -l)" = 20 -a -z "$(ls st/runs/*/*/eval_*.samples.jsonl 2>/dev/null)"
  # one eval seed per training seed (eval.seed + seed), shared by every arm of that seed
  check "eval seed of seed 1 is 1 for both arms" test "$(cat st/runs/seed1/*/eval_sampled.args | grep -c ' seed=1 ')" = 5
  check "eval seed of seed 2 is 2 for both arms" test "$(cat st/runs/seed2/*/eval_sampled.args | grep -c ' seed=2 ')" = 5
  check "study.json and study.md name the eval seeds" python3 -c "
import json; assert json.load(open('st/study.json'))['eval_seeds'] == [1, 2]
assert 'sampled with eval seed 0 + s' in open('st/study.md').read()"
  # a rerun reuses every finished run and gives the same report
  cp st/study.json first.json
  cp st/study.md first.md
  "$S2D" study study.yaml --out st >stdout2 2>stderr2
  check "rerun reuses every run" grep -q "30 of 30 jobs reused" stderr2
  check "rerun gives the same numbers" python3 -c "
import json; a = json.load(open('first.json')); b = json.load(open('st/study.json'))
assert a['arms'] == b['arms'] and a['claims'] == b['claims']"
  # a study directory copied (or moved) elsewhere is reused: only its ancestors' model paths and the eval data
  # path differ, and its stage.yaml files and eval stamps then name the new directory
  cp -r st moved
  leaf=$(ls -d moved/runs/seed2/*-student_rl | tail -1)
  sed -i 's/^seed: \([0-9]*\)/seed: 9\1/' "$leaf/stage.yaml"   # and one node edited: that node alone reruns
  "$S2D" study study.yaml --out moved >stdoutm 2>stderrm
  check "a copied study directory reuses every unchanged run" grep -q "27 of 30 jobs reused" stderrm
  check "the edited node reran (train and two evals)" test "$(grep -c 'done  ' stderrm)" = 3 -a "$(grep -c "done  train  *seed 2 student_rl" stderrm)" = 1
  check "the copy's stage.yaml files and eval stamps name the copy" test -z "$(grep -rlF -e "$(realpath st)/" -e "data=st/" moved/runs --include=stage.yaml --include='*.args')" -a -n "$(grep -rlF "\"$(realpath moved)/runs/" moved/runs --include=stage.yaml)" -a "$(cat moved/runs/*/*/eval_*.args | grep -c 'data=moved/data/')" = 20
  check "the copy gives the same numbers" python3 -c "
import json; a = json.load(open('first.json')); b = json.load(open('moved/study.json'))
assert a['arms'] == b['arms'] and a['claims'] == b['claims']"
  # tools/study_bases.sh: the verdicts at disjoint seed bases (here 1-2 and 3-4) and pooled, in one directory
  bash "$S2D_ROOT/tools/study_bases.sh" "$(dirname "$S2D")" study.yaml moved 2 2 >stdoutb 2>stderrb
  check "study_bases: a table of every claim at both bases and pooled" python3 - <<'EOF2'
import json
b1, b3, pooled = (json.load(open(f)) for f in ('moved/bases/base-1-2.json', 'moved/bases/base-3-2.json', 'moved/study.json'))
first = json.load(open('first.json'))
assert b1['claims'] == first['claims'] and b1['seeds'] == [1, 2] and b3['seeds'] == [3, 4], (b1['seeds'], b3['seeds'])
assert pooled['seeds'] == [1, 2, 3, 4]
rows = [l for l in open('moved/bases-2x2.md') if l.startswith('| ') and not l.startswith('| claim')]
assert len(rows) == len(pooled['claims']) == 2, rows
n_same = 0
for i, row in enumerate(rows):
    cells = [x.strip() for x in row.strip().strip('|').split('|')]
    assert cells[0] == pooled['claims'][i]['id'], cells
    for got, c in zip(cells[1:4], (b1['claims'][i], b3['claims'][i], pooled['claims'][i])):
        assert got == f"{c['difference']:+.2f} ± {c['se']:.2f} {c['verdict']}", (got, c)
    same = b1['claims'][i]['verdict'] == b3['claims'][i]['verdict']
    n_same += same
    assert cells[4] == ('yes' if same else 'no'), cells
assert f'{n_same} of 2 claims get the same verdict at all 2 bases of 2 seeds.' in open('moved/bases-2x2.md').read()
assert open('stdoutb').read() == open('moved/bases-2x2.md').read()
EOF2
  check "study_bases: seeds 1-2 reused, 3-4 trained once" test "$(grep -c 'done  train' stderrb)" = "$(grep -c 'done  train' stderr)"
  expect_error "study_bases: one seed per base" "SEEDS must be at least 2" bash "$S2D_ROOT/tools/study_bases.sh" "$(dirname "$S2D")" study.yaml moved 1 2
  # fewer seeds: run directories are numbered within their seed, so every run of seed 1 is reused
  "$S2D" study study.yaml --out st --seeds 1 >stdout1 2>stderr1
  check "--seeds 1 after 2 seeds reuses every run" grep -qE "; ([0-9]+) of \1 jobs reused" stderr1
  # other eval settings: the training runs are reused, the evaluations are not
  sed 's/samples: 2,/samples: 3,/' study.yaml >study3.yaml
  "$S2D" study study3.yaml --out st >stdout3 2>stderr3
  check "eval settings changed: 10 sampled evals rerun" test "$(grep -c 'done  eval sampled' stderr3)" = 10
  check "eval settings changed: no train, no greedy eval rerun" test "$(grep -cE 'done  (train|eval greedy)' stderr3)" = 0
  rm "$(ls st/runs/seed1/*-bridge_fkl/eval_greedy.problems)"
  "$S2D" study study3.yaml --out st >stdout4 2>stderr4
  check "a missing per-problem file reruns that eval only" test "$(grep -c 'done  ' stderr4)" = 1 -a "$(grep -c 'done  eval greedy  *seed 1 bridge_fkl' stderr4)" = 1
  # eval.plot_samples: the stages inside an arm (only the plot reads them) sample fewer; the shared stage and the
  # arms' last stages keep eval.samples, so only the inner stages' sampled evals rerun
  sed 's/samples: 3,/samples: 3, plot_samples: 1,/' study3.yaml >studyp.yaml
  "$S2D" study studyp.yaml --out st >stdoutp 2>stderrp
  check "plot_samples: only the 4 inner stages' sampled evals rerun" test "$(grep -c 'done  ' stderrp)" = 4 -a "$(grep -cE 'done  eval sampled +seed [12] (bridge_fkl|direct) ' stderrp)" = 4
  check "plot_samples: inner stages at 1 sample, the rest at 3" python3 - <<'EOF2'
import glob, json
for p in glob.glob('st/runs/*/*/eval_sampled.problems'):
    want = 1 if p.split('/')[-2].split('-', 1)[1] in ('bridge_fkl', 'direct') else 3
    assert all(int(l.split('\t')[2]) == want for l in open(p).read().splitlines()), p
j = json.load(open('st/study.json'))
assert j['eval_samples'] == 3 and j['eval_plot_samples'] == 1
assert [e['samples'] for e in j['arms']['s2d']['after_stage']] == [1, 3]
EOF2
  check "study.md says the inner stages' sample count" grep -q "the stages inside an arm, which only the plot shows, at avg@1" st/study.md
  # another eval.seed: every sampled eval reruns with seed + s, no greedy eval (the seed cannot change argmax)
  sed 's/plot_samples: 1,/plot_samples: 1, seed: 10,/' studyp.yaml >studys.yaml
  "$S2D" study studys.yaml --out st >stdouts 2>stderrs
  check "eval.seed changed: the 10 sampled evals rerun, nothing else" test "$(grep -c 'done  ' stderrs)" = 10 -a "$(grep -c 'done  eval sampled' stderrs)" = 10
  check "eval.seed changed: seed 2's evals at eval seed 12, greedy evals at seed 0" test "$(cat st/runs/seed2/*/eval_sampled.args | grep -c ' seed=12 ')" = 5 -a "$(cat st/runs/*/*/eval_greedy.args | grep -c ' seed=0 ')" = 10
  # kernels: portable by default (the children pinned to CPU-independent kernels at one thread); native with
  # the same pins set by hand retrains every run (other kernels, no reuse) and gives the same numbers
  check "study.md names the kernels" grep -q "Kernels: portable (S2D_NO_AVX512=1" first.md
  check "study.json names the kernels" python3 -c "import json; assert json.load(open('first.json'))['kernels'] == 'portable'"
  check "children ran the portable paths at one thread" grep -q "1 OpenMP threads, fp32 (OpenBLAS .* kernels), AVX-512 off" st/runs/seed1/*-bridge_fkl/train.log
  if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
    check "children ran OpenBLAS's Haswell kernels" grep -q "(OpenBLAS Haswell kernels)" st/runs/seed2/*-student_rl/train.log
  fi
  (cd st/runs && md5sum */*/out/models/*/model.safetensors) >portable.md5
  S2D_NO_AVX512=1 OPENBLAS_CORETYPE=Haswell OMP_NUM_THREADS=1 "$S2D" study study.yaml --out st --kernels native >stdoutn 2>stderrn
  check "other kernels: nothing reused" grep -q "0 of 30 jobs reused" stderrn
  check "native with the portable pins by hand: the same models, bit for bit" bash -c "cd st/runs && md5sum -c --quiet $PWD/portable.md5"
  check "native with the portable pins by hand: the same numbers" python3 -c "
import json; a = json.load(open('first.json')); b = json.load(open('st/study.json'))
assert b['kernels'] == 'native' and a['arms'] == b['arms'] and a['claims'] == b['claims']"
  expect_error "bad --kernels" "study: --kernels: 'fast': expected portable or native" "$S2D" study study.yaml --out st --kernels fast
else
  fail "micro study failed: $(tail -5 stderr)"
fi
# a run that fails ends the study with an error naming its log
sed 's/^seeds: 2/seeds: 1/' study.yaml >fail.yaml
echo 'set: ["fault={rank: 0, at_step: 1, kind: error}"]' >>fail.yaml
expect_error "failing run" "train of seed 1 [a-z_]+ failed \(exit status 1\): see .*/train.log" "$S2D" study fail.yaml --out "$WORK/fl"
check "no child left running after the failure" test -z "$(pgrep -f "$WORK/fl/")"
# config errors name the file and the problem, before anything runs
sed 's/stages: \[bridge_fkl, student_rl\]/stages: [bridge_fk, student_rl]/' study.yaml >bad1.yaml
expect_error "unknown stage" "arm s2d: stage 'bridge_fk' is not in the pipeline" "$S2D" study bad1.yaml --out b1
sed 's/student_rl.policy=direct/teacher_rl.steps=3/' study.yaml >bad2.yaml
expect_error "set on a stage not of the arm" "must start with one of the arm's stages" "$S2D" study bad2.yaml --out b2
sed 's/better: s2d/better: s2dd/' study.yaml >bad3.yaml
expect_error "claim on an unknown arm" "claims\[0\].better: 's2dd' is not an arm" "$S2D" study bad3.yaml --out b3
sed 's/^seeds: 2/seedz: 2/' study.yaml >bad4.yaml
expect_error "unknown key" "bad4.yaml:2:1: unknown key 'seedz'" "$S2D" study bad4.yaml --out b4
sed 's/^jobs: 2/jobs: 2\nkernels: fast/' study.yaml >bad5.yaml
expect_error "bad kernels: value" "bad5.yaml:4:10: kernels" "$S2D" study bad5.yaml --out b5
check "no output for a bad config" test ! -e b1/study.md
summary
