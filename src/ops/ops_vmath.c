/* ops_vmath.c: see ops_vmath.h. */
#include "ops/ops_vmath.h"

#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
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

/* ---- portable path: glibc's expf, 8 lanes at a time, the same bits ----
 * glibc (2.27 on, the FMA variant its ifunc picks on CPUs with AVX2 and FMA) computes expf(x) in double as
 * k + r = x * 32 / ln 2 (k rounded by adding 1.5 * 2^52), 2^(k/32) from a 32-entry table of 2^(i/32) with k's high
 * bits added to the exponent, times the cubic C0 r^3 + C1 r^2 + C2 r + 1, rounded to float. The vector code below
 * does the same operations with the same fused multiply-adds, so each lane equals the scalar call bit for bit;
 * |x| >= 80 (glibc's special-case branch: overflow, underflow, inf, nan) goes to the scalar call. It is used
 * only after a check against expf itself (vm_glibc_expf_check), so a libm with other constants or another
 * rounding path keeps the scalar loop. */

#define AVX2FMA __attribute__((target("avx2,fma")))

static const double EXPF_INV_LN2_N = 0x1.71547652b82fep+5; /* 32 / ln 2 */
static const double EXPF_SHIFT = 0x1.8p+52;
static const double EXPF_C0 = 0x1.c6af84b912394p-20, EXPF_C1 = 0x1.ebfce50fac4f3p-13, EXPF_C2 = 0x1.62e42ff0c52d6p-6;
/* bits of 2^(i/32) rounded to double, minus i << 47 (so adding k << 47 puts k / 32's integer part in the exponent) */
static uint64_t g_expf_tab[32];

/* 0: scalar expf; 1: the vector replica (checked); decided once (vexpf_decide). */
static int g_vexpf = 0;

/* 4 lanes of x (no lane with |x| >= 80) */
static inline AVX2FMA __m128 expf4_replica(__m128 x) {
    const __m256d xd = _mm256_cvtps_pd(x), inv = _mm256_set1_pd(EXPF_INV_LN2_N), shift = _mm256_set1_pd(EXPF_SHIFT);
    const __m256d kds = _mm256_fmadd_pd(inv, xd, shift);
    const __m256i ki = _mm256_castpd_si256(kds);
    const __m256d kd = _mm256_sub_pd(kds, shift);
    const __m256d r = _mm256_fmsub_pd(inv, xd, kd);
    const __m256i t = _mm256_add_epi64(
        _mm256_i64gather_epi64((const long long *)g_expf_tab, _mm256_and_si256(ki, _mm256_set1_epi64x(31)), 8),
        _mm256_slli_epi64(ki, 47));
    const __m256d z = _mm256_fmadd_pd(_mm256_set1_pd(EXPF_C0), r, _mm256_set1_pd(EXPF_C1));
    const __m256d r2 = _mm256_mul_pd(r, r);
    __m256d y = _mm256_fmadd_pd(r, _mm256_set1_pd(EXPF_C2), _mm256_set1_pd(1.0));
    y = _mm256_fmadd_pd(z, r2, y);
    return _mm256_cvtpd_ps(_mm256_mul_pd(y, _mm256_castsi256_pd(t)));
}

/* expf of 8 lanes, each bitwise glibc's: below glibc's underflow bound (-0x1.9fe368p+6) it returns +0, as glibc;
 * the other lanes with |x| >= 80 (or nan) take the scalar call */
static inline AVX2FMA __m256 expf8(__m256 x) {
    const __m256 ax = _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
    const __m256 zero = _mm256_cmp_ps(x, _mm256_set1_ps(-0x1.9fe368p+6f), _CMP_LT_OQ);
    const __m256 big = _mm256_andnot_ps(zero, _mm256_cmp_ps(ax, _mm256_set1_ps(80.0f), _CMP_NLT_UQ));
    const int special = _mm256_movemask_ps(big);
    /* the replica on the lanes in range (the others set to 0, in range), then zeros and the scalar lanes */
    const __m256 xs = _mm256_andnot_ps(_mm256_or_ps(big, zero), x);
    __m256 y = _mm256_set_m128(expf4_replica(_mm256_extractf128_ps(xs, 1)), expf4_replica(_mm256_castps256_ps128(xs)));
    y = _mm256_andnot_ps(zero, y);
    if (special) {
        float xv[8], yv[8];
        _mm256_storeu_ps(xv, x);
        _mm256_storeu_ps(yv, y);
        for (int i = 0; i < 8; i++)
            if (special >> i & 1) yv[i] = expf(xv[i]);
        y = _mm256_loadu_ps(yv);
    }
    return y;
}

AVX2FMA static void expf_array_replica(float *dst, const float *x, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, expf8(_mm256_loadu_ps(x + i)));
    for (; i < n; i++) dst[i] = expf(x[i]);
}

static bool cpu_has_avx2_fma(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

static void expf_tab_init(void) {
    for (int i = 0; i < 32; i++) {
        double t = (double)exp2l((long double)i / 32.0L);
        uint64_t bits;
        memcpy(&bits, &t, 8);
        g_expf_tab[i] = bits - ((uint64_t)i << 47);
    }
}
static pthread_once_t g_expf_tab_once = PTHREAD_ONCE_INIT;

bool vm_glibc_expf_check(size_t stride) {
    if (!cpu_has_avx2_fma() || stride == 0) return false;
    pthread_once(&g_expf_tab_once, expf_tab_init);
    /* every stride-th float of both signs up to infinity, in chunks */
    enum { CHUNK = 4096 };
    float in[CHUNK], got[CHUNK];
    const uint64_t top = 0x7f800000u; /* inf */
    for (int sign = 0; sign < 2; sign++) {
        size_t fill = 0;
        for (uint64_t b = 0; b <= top; b += stride) {
            const uint32_t u = (uint32_t)b | (sign ? 0x80000000u : 0u);
            memcpy(&in[fill++], &u, 4);
            if (fill == CHUNK || b + stride > top) {
                expf_array_replica(got, in, fill);
                for (size_t i = 0; i < fill; i++) {
                    const float want = expf(in[i]);
                    if (memcmp(&want, &got[i], 4) != 0) return false;
                }
                fill = 0;
            }
        }
    }
    return true;
}

static void vexpf_decide(void) {
    /* ~520 k inputs: a few ms, once per process */
    const bool ok = vm_glibc_expf_check(8191);
    if (!ok && cpu_has_avx2_fma())
        log_info("ops: this libm's expf is not glibc's FMA expf: the portable loops call it per element");
    __atomic_store_n(&g_vexpf, ok ? 1 : 0, __ATOMIC_RELEASE);
}
static pthread_once_t g_vexpf_once = PTHREAD_ONCE_INIT;

static bool use_vexpf(void) {
    pthread_once(&g_vexpf_once, vexpf_decide);
    return __atomic_load_n(&g_vexpf, __ATOMIC_ACQUIRE) == 1;
}

void vm_force_scalar_expf(bool scalar) {
    pthread_once(&g_vexpf_once, vexpf_decide);
    __atomic_store_n(&g_vexpf, !scalar && vm_glibc_expf_check(8191) ? 1 : 0, __ATOMIC_RELEASE);
}

AVX2FMA static double exp_sum_vexpf(float *dst, const float *x, int n, float shift) {
    double sum = 0;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        float e[8];
        _mm256_storeu_ps(e, expf8(_mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(shift))));
        if (dst) memcpy(dst + i, e, sizeof e);
        for (int j = 0; j < 8; j++) sum += e[j]; /* the scalar loop's order */
    }
    for (; i < n; i++) {
        float e = expf(x[i] - shift);
        if (dst) dst[i] = e;
        sum += e;
    }
    return sum;
}

AVX2FMA static void exp_scale_vexpf(float *dst, const float *x, int n, float shift, float a) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_set1_ps(a), expf8(_mm256_sub_ps(_mm256_loadu_ps(x + i),
                                                                                        _mm256_set1_ps(shift)))));
    for (; i < n; i++) dst[i] = a * expf(x[i] - shift);
}

static inline AVX2FMA __m256 neg8(__m256 v) { return _mm256_xor_ps(v, _mm256_set1_ps(-0.0f)); }

AVX2FMA static void swiglu_fwd_vexpf(float *h, const float *g, const float *u, size_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 gv = _mm256_loadu_ps(g + i);
        const __m256 silu = _mm256_div_ps(gv, _mm256_add_ps(one, expf8(neg8(gv))));
        _mm256_storeu_ps(h + i, _mm256_mul_ps(silu, _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

AVX2FMA static void swiglu_bwd_vexpf(float *dgate, float *dup, const float *dh, const float *g, const float *u,
                                     size_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 gv = _mm256_loadu_ps(g + i), dv = _mm256_loadu_ps(dh + i);
        const __m256 sg = _mm256_div_ps(one, _mm256_add_ps(one, expf8(neg8(gv))));
        _mm256_storeu_ps(dup + i, _mm256_mul_ps(_mm256_mul_ps(dv, gv), sg));
        const __m256 back = _mm256_add_ps(one, _mm256_mul_ps(gv, _mm256_sub_ps(one, sg)));
        _mm256_storeu_ps(dgate + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(dv, _mm256_loadu_ps(u + i)), sg), back));
    }
    for (; i < n; i++) {
        float sg = 1.0f / (1.0f + expf(-g[i]));
        dup[i] = dh[i] * g[i] * sg;
        dgate[i] = dh[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
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
    if (use_vexpf()) return exp_sum_vexpf(dst, x, n, shift);
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
    if (use_vexpf()) {
        exp_scale_vexpf(dst, x, n, shift, a);
        return;
    }
    for (int i = 0; i < n; i++) dst[i] = a * expf(x[i] - shift);
}

void vm_swiglu_fwd(float *h, const float *g, const float *u, size_t n) {
    if (use_avx512()) {
        swiglu_fwd_avx512(h, g, u, n);
        return;
    }
    if (use_vexpf()) {
        swiglu_fwd_vexpf(h, g, u, n);
        return;
    }
    for (size_t i = 0; i < n; i++) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void vm_swiglu_bwd(float *dgate, float *dup, const float *dh, const float *g, const float *u, size_t n) {
    if (use_avx512()) {
        swiglu_bwd_avx512(dgate, dup, dh, g, u, n);
        return;
    }
    if (use_vexpf()) {
        swiglu_bwd_vexpf(dgate, dup, dh, g, u, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float sg = 1.0f / (1.0f + expf(-g[i]));
        dup[i] = dh[i] * g[i] * sg;
        dgate[i] = dh[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
    }
}
