/* fixture.h: reading reference tensors of the PyTorch/HF fixtures (tests/fixtures/parity/<case>/ref.safetensors)
 * in tests. A missing or unreadable tensor ends the test binary with a message (run.sh counts it as a failure). */
#pragma once
#include "core/common.h"
#include "io/safetensors.h"

/* The tensor as fp32 (F32/BF16/F16), malloc'd; *count (may be NULL) = its element count. */
static inline float *fixture_f32(const st_set *ref, const char *name, size_t *count) {
    const st_tensor *t = st_find(ref, name);
    if (!t) die("fixture tensor %s missing", name);
    float *v = xmalloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
    s2d_err err;
    CHECK_OK(st_read_f32(t, v, (size_t)t->numel, &err), &err);
    if (count) *count = (size_t)t->numel;
    return v;
}

/* The tensor as int32 (I32, or I64 in range), malloc'd. */
static inline int32_t *fixture_i32(const st_set *ref, const char *name, size_t *count) {
    const st_tensor *t = st_find(ref, name);
    if (!t) die("fixture tensor %s missing", name);
    int32_t *v = xmalloc((size_t)(t->numel ? t->numel : 1) * sizeof(int32_t));
    s2d_err err;
    CHECK_OK(st_read_i32(t, v, (size_t)t->numel, &err), &err);
    if (count) *count = (size_t)t->numel;
    return v;
}
