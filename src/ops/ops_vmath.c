/* ops_vmath.c: see ops_vmath.h. */
#include "ops/ops_vmath.h"

#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "ops/ops.h"

#define AVX512 __attribute__((target("avx512f")))

/* glibc libmvec (linked through libm.so's AS_NEEDED libmvec): 16-lane expf. */
AVX512 __m512 _ZGVeN16v_expf(__m512 x);

/* -1: not decided yet; 0: portable loops; 1: AVX-512. Decided once from the CPU and S2D_NO_AVX512. */
static int g_avx512 = -1;

bool ops_avx512_active(void) {
    int v = __atomic_load_n(&g_avx512, __ATOMIC_ACQUIRE);
    if (v < 0) {
        const char *env = getenv("S2D_NO_AVX512");
        bool forced_off = env && env[0] && strcmp(env, "0") != 0;
        __builtin_cpu_init();
        v = !forced_off && __builtin_cpu_supports("avx512f") ? 1 : 0;
        __atomic_store_n(&g_avx512, v, __ATOMIC_RELEASE);
        if (forced_off) log_info("ops: S2D_NO_AVX512=%s: portable code paths (no AVX-512 kernels)", env);
    }
    return v == 1;
}

void ops_set_portable(bool portable) {
    __builtin_cpu_init();
    int v = !portable && __builtin_cpu_supports("avx512f") ? 1 : 0;
    __atomic_store_n(&g_avx512, v, __ATOMIC_RELEASE);
}

static bool use_avx512(void) { return ops_avx512_active(); }

static inline __mmask16 tail_mask(int left) { return (__mmask16)(left >= 16 ? 0xFFFFu : (1u << left) - 1u); }

AVX512 static float max_avx512(const float *x, int n) {
    __m512 m = _mm512_set1_ps(-INFINITY);
    for (int i = 0; i < n; i += 16) m = _mm512_max_ps(m, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail_mask(n - i), x + i));
    return _mm512_reduce_max_ps(m);
}

AVX512 static double exp_sum_avx512(float *dst, const float *x, int n, float shift) {
    __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
    const __m512 s = _mm512_set1_ps(shift);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 e = _ZGVeN16v_expf(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), s));
        e = _mm512_maskz_mov_ps(m, e);
        if (dst) _mm512_mask_storeu_ps(dst + i, m, e);
        lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
}

AVX512 static void exp_scale_avx512(float *dst, const float *x, int n, float shift, float a) {
    const __m512 s = _mm512_set1_ps(shift), av = _mm512_set1_ps(a);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 e = _ZGVeN16v_expf(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), s));
        _mm512_mask_storeu_ps(dst + i, m, _mm512_mul_ps(av, e));
    }
}

AVX512 static void swiglu_fwd_avx512(float *h, const float *g, const float *u, size_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask((int)(n - i < 16 ? n - i : 16));
        __m512 gv = _mm512_maskz_loadu_ps(m, g + i), uv = _mm512_maskz_loadu_ps(m, u + i);
        __m512 den = _mm512_add_ps(one, _ZGVeN16v_expf(_mm512_sub_ps(_mm512_setzero_ps(), gv)));
        _mm512_mask_storeu_ps(h + i, m, _mm512_mul_ps(_mm512_div_ps(gv, den), uv));
    }
}

AVX512 static void swiglu_bwd_avx512(float *dgate, float *dup, const float *dh, const float *g, const float *u,
                                     size_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask((int)(n - i < 16 ? n - i : 16));
        __m512 gv = _mm512_maskz_loadu_ps(m, g + i), uv = _mm512_maskz_loadu_ps(m, u + i);
        __m512 dv = _mm512_maskz_loadu_ps(m, dh + i);
        __m512 sg = _mm512_div_ps(one, _mm512_add_ps(one, _ZGVeN16v_expf(_mm512_sub_ps(_mm512_setzero_ps(), gv))));
        __m512 silu = _mm512_mul_ps(gv, sg);
        _mm512_mask_storeu_ps(dup + i, m, _mm512_mul_ps(dv, silu));
        __m512 t = _mm512_add_ps(one, _mm512_mul_ps(gv, _mm512_sub_ps(one, sg)));
        _mm512_mask_storeu_ps(dgate + i, m, _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(dv, uv), sg), t));
    }
}

float vm_max(const float *x, int n) {
    if (use_avx512()) return max_avx512(x, n);
    float m = x[0];
    for (int i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

double vm_exp_sum(float *dst, const float *x, int n, float shift) {
    if (use_avx512()) return exp_sum_avx512(dst, x, n, shift);
    double sum = 0;
    for (int i = 0; i < n; i++) {
        float e = expf(x[i] - shift);
        if (dst) dst[i] = e;
        sum += e;
    }
    return sum;
}

void vm_exp_scale(float *dst, const float *x, int n, float shift, float a) {
    if (use_avx512()) {
        exp_scale_avx512(dst, x, n, shift, a);
        return;
    }
    for (int i = 0; i < n; i++) dst[i] = a * expf(x[i] - shift);
}

void vm_swiglu_fwd(float *h, const float *g, const float *u, size_t n) {
    if (use_avx512()) {
        swiglu_fwd_avx512(h, g, u, n);
        return;
    }
    for (size_t i = 0; i < n; i++) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void vm_swiglu_bwd(float *dgate, float *dup, const float *dh, const float *g, const float *u, size_t n) {
    if (use_avx512()) {
        swiglu_bwd_avx512(dgate, dup, dh, g, u, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float sg = 1.0f / (1.0f + expf(-g[i]));
        dup[i] = dh[i] * g[i] * sg;
        dgate[i] = dh[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
    }
}
