#!/usr/bin/env bash
# The backend seam: tools/check_seam.sh passes on the tree, and flags tensor memory touched outside src/ops
# (a memcpy, an OpenMP pragma, a malloc) when one is added; `s2d devices` and --device errors.
. "$(dirname "$0")/lib.sh"
export S2D_LOG=warn
cd "$WORK" || exit 1
check "model and algorithm code touch tensor memory only through ops.h" bash "$S2D_ROOT/tools/check_seam.sh" "$S2D_ROOT"
# the checker itself: a copy of the tree with one violation of each kind must fail, naming the line
mkdir -p tree/src/model tree/src/algo tree/src/runtime tree/tools
cp "$S2D_ROOT"/src/model/*.c tree/src/model/ && cp "$S2D_ROOT"/src/algo/*.c tree/src/algo/ && cp "$S2D_ROOT"/src/runtime/*.c tree/src/runtime/
cp "$S2D_ROOT/tools/seam_allow.txt" tree/tools/
check "the copy passes" bash "$S2D_ROOT/tools/check_seam.sh" tree
for bad in 'memcpy(m->params, src, n * sizeof(float));' '#pragma omp parallel for' 'float *g = malloc(n * 4);' \
           'cblas_saxpy(n, 1.0f, x, 1, y, 1);' 'memset(m->grads, 0, n * sizeof(float));'; do
  cp "$S2D_ROOT/src/model/model.c" tree/src/model/model.c
  printf 'static void injected(void) {\n    %s\n}\n' "$bad" >> tree/src/model/model.c
  out=$(bash "$S2D_ROOT/tools/check_seam.sh" tree 2>&1); rc=$?
  if [ $rc -ne 0 ] && grep -q "src/model/model.c:" <<<"$out"; then ok; else fail "checker missed: $bad"; fi
done
cp "$S2D_ROOT/src/model/model.c" tree/src/model/model.c
# devices
check "s2d devices lists the cpu backend" bash -c "'$S2D' devices | grep -q '^cpu: 1 device'"
"$S2D" init-model --preset qwen3-tiny --out tiny --seed 1 2>/dev/null
check "--device cpu runs" bash -c "echo '[1,2,3]' | '$S2D' logprobs --model tiny --device cpu > a.jsonl"
check "--device cpu = default" bash -c "echo '[1,2,3]' | '$S2D' logprobs --model tiny | cmp -s - a.jsonl"
if ! "$S2D" devices | grep -q '^cuda: [1-9]'; then
  expect_error "--device cuda without a GPU or the backend is a clear error" "cuda" \
    bash -c "echo '[1,2]' | '$S2D' logprobs --model tiny --device cuda"
fi
expect_error "cpu:1 does not exist" "cpu backend sees 1 device" bash -c "echo '[1,2]' | '$S2D' logprobs --model tiny --device cpu:1"
expect_error "unknown backend" "unknown backend 'tpu'" bash -c "echo '[1]' | '$S2D' generate --model tiny --max-new-tokens 1 --device tpu"
# the tiny config's paths are relative to the repository
expect_error "train --device checks the backend" "device 'nope'" \
  bash -c "cd '$S2D_ROOT' && '$S2D' train configs/tests/tiny-pipeline.yaml --out '$WORK/run' --device nope"
expect_error "device: in the config is checked" "device 'bogus:x'" \
  bash -c "cd '$S2D_ROOT' && '$S2D' train configs/tests/tiny-pipeline.yaml --out '$WORK/run2' --set device=bogus:x"
check "S2D_DEVICE=cpu is the default device" bash -c "echo '[1,2,3]' | S2D_DEVICE=cpu '$S2D' logprobs --model tiny | cmp -s - a.jsonl"
expect_error "a bad S2D_DEVICE is named" "S2D_DEVICE: device 'tpu:0'" bash -c "echo '[1,2]' | S2D_DEVICE=tpu:0 '$S2D' logprobs --model tiny"
summary
