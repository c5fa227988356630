/* ops_rows.c: row-exact kernels for the KV-cache paths (decode and prefill), where M (rows) is small and a
 * row's result must not depend on the other rows of the batch.
 *
 * cpu_linear_rows computes every y[t, o] as ONE dot product x[t, :] . W[o, :] in a fixed order (16-lane partial
 * sums over k in steps of 16, then a fixed lane reduction), whatever T, the row's place in the batch, the
 * register block it falls in, or the thread count. It reads each weight row once per 4 rows of x (a weight
 * block stays in cache while all x blocks pass over it), which is what small-M decode needs: OpenBLAS
 * repacks the weights on every call, costing more than the multiply at M <= 16.
 *
 * cpu_attention_decode: one query row against a cached sequence per (row, head); AVX-512 dot products and
 * softmax-weighted sums over contiguous K/V rows.
 *
 * cpu_linear_rows_bf16: the same with bf16 weights widened in registers (bitwise the same results, half the bytes).
 *
 * The AVX-512 code is chosen at run time (ops_avx512_active: the CPU, S2D_NO_AVX512); the portable fallback computes the same
 * formulas with plain loops (its bits differ from the AVX-512 path's, but are just as row-exact). On CPUs with AVX2
 * the fallbacks of cpu_linear_rows and cpu_attention_decode run as AVX2 code with the plain loops' exact bits
 * (cpu_rows_force_plain): the same operations per element in the same order, vectorised across outputs or keys. */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "core/common.h"
#include "ops/ops_cpu.h"
#include "ops/ops_vmath.h"

/* Weight rows per thread chunk: 16 rows x in floats stay in L2 while every x block passes over them. */
#define ROWS_WCHUNK 16

static bool have_avx512(void) { return ops_avx512_active(); }

/* Weights are fp32 (W32) or raw bf16 bits (W16); one of the two is non-NULL. Element i of either, widened. */
typedef struct {
    const float *w32;
    const uint16_t *w16;
} weights;

static inline float widen_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- AVX-512 ---- */

#define AVX512 __attribute__((target("avx512f")))
#define INLINE static inline __attribute__((always_inline))

/* 16 weights from element i (bf16 widened by a shift: exact), all lanes. */
INLINE AVX512 __m512 load_w16(weights W, bool bf16, size_t i) {
    if (bf16)
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(W.w16 + i))), 16));
    return _mm512_loadu_ps(W.w32 + i);
}

/* The first n < 16 weights from element i, the other lanes zero (as the fp32 masked load gives). */
INLINE AVX512 __m512 load_w_tail(weights W, bool bf16, size_t i, int n, __mmask16 m) {
    if (bf16) {
        uint16_t tmp[16] = {0};
        memcpy(tmp, W.w16 + i, sizeof(uint16_t) * (size_t)n);
        return load_w16((weights){NULL, tmp}, true, 0);
    }
    return _mm512_maskz_loadu_ps(m, W.w32 + i);
}

/* XR rows of x times WB weight rows starting at element w0 (row stride ldw): XR*WB independent accumulators;
 * each element's chain is fma over k = 0, 16, 32, ... then a masked tail, then _mm512_reduce_add_ps: the same
 * for every block shape and for both weight types. */
INLINE AVX512 void rows_block(float *y, int ldy, const float *x, int ldx, weights W, bool bf16, size_t w0, int ldw,
                              int in, int XR, int WB, bool accumulate) {
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < XR; r++)
#pragma GCC unroll 4
        for (int j = 0; j < WB; j++) acc[r][j] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 16 <= in; k += 16) {
        __m512 xv[4];
#pragma GCC unroll 4
        for (int r = 0; r < XR; r++) xv[r] = _mm512_loadu_ps(x + (size_t)r * ldx + k);
#pragma GCC unroll 4
        for (int j = 0; j < WB; j++) {
            __m512 wv = load_w16(W, bf16, w0 + (size_t)j * ldw + k);
#pragma GCC unroll 4
            for (int r = 0; r < XR; r++) acc[r][j] = _mm512_fmadd_ps(xv[r], wv, acc[r][j]);
        }
    }
    if (k < in) {
        __mmask16 m = (__mmask16)((1u << (in - k)) - 1u);
        __m512 xv[4];
#pragma GCC unroll 4
        for (int r = 0; r < XR; r++) xv[r] = _mm512_maskz_loadu_ps(m, x + (size_t)r * ldx + k);
#pragma GCC unroll 4
        for (int j = 0; j < WB; j++) {
            __m512 wv = load_w_tail(W, bf16, w0 + (size_t)j * ldw + k, in - k, m);
#pragma GCC unroll 4
            for (int r = 0; r < XR; r++) acc[r][j] = _mm512_fmadd_ps(xv[r], wv, acc[r][j]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < XR; r++)
#pragma GCC unroll 4
        for (int j = 0; j < WB; j++) {
            float d = _mm512_reduce_add_ps(acc[r][j]);
            float *dst = y + (size_t)r * ldy + j;
            *dst = accumulate ? *dst + d : d;
        }
}

INLINE AVX512 void rows_chunk_avx512(float *y, const float *x, weights W, bool bf16, int T, int in, int out,
                                     int o0, int o1, bool accumulate) {
    int t = 0;
    for (; t + 4 <= T; t += 4) {
        const float *xt = x + (size_t)t * in;
        float *yt = y + (size_t)t * out;
        int o = o0;
        for (; o + 4 <= o1; o += 4) rows_block(yt + o, out, xt, in, W, bf16, (size_t)o * in, in, in, 4, 4, accumulate);
        for (; o < o1; o++) rows_block(yt + o, out, xt, in, W, bf16, (size_t)o * in, in, in, 4, 1, accumulate);
    }
    for (; t < T; t++) {
        const float *xt = x + (size_t)t * in;
        float *yt = y + (size_t)t * out;
        int o = o0;
        for (; o + 4 <= o1; o += 4) rows_block(yt + o, out, xt, in, W, bf16, (size_t)o * in, in, in, 1, 4, accumulate);
        for (; o < o1; o++) rows_block(yt + o, out, xt, in, W, bf16, (size_t)o * in, in, in, 1, 1, accumulate);
    }
}

/* Separate instances so each inner loop is compiled for one weight type. */
AVX512 static void rows_chunk_avx512_f32(float *y, const float *x, weights W, int T, int in, int out, int o0, int o1,
                                         bool accumulate) {
    rows_chunk_avx512(y, x, W, false, T, in, out, o0, o1, accumulate);
}
AVX512 static void rows_chunk_avx512_bf16(float *y, const float *x, weights W, int T, int in, int out, int o0,
                                          int o1, bool accumulate) {
    rows_chunk_avx512(y, x, W, true, T, in, out, o0, o1, accumulate);
}

/* ---- portable fallback: 16 partial sums per element, in the same pattern ---- */

static void rows_chunk_plain(float *y, const float *x, weights W, int T, int in, int out, int o0, int o1,
                             bool accumulate) {
    for (int t = 0; t < T; t++)
        for (int o = o0; o < o1; o++) {
            const float *xt = x + (size_t)t * in;
            const size_t w0 = (size_t)o * in;
            float part[16] = {0};
            if (W.w16)
                for (int k = 0; k < in; k++) part[k & 15] += xt[k] * widen_bf16(W.w16[w0 + k]);
            else
                for (int k = 0; k < in; k++) part[k & 15] += xt[k] * W.w32[w0 + k];
            float d = 0;
            for (int l = 0; l < 16; l++) d += part[l];
            y[(size_t)t * out + o] = accumulate ? y[(size_t)t * out + o] + d : d;
        }
}

/* ---- AVX2: the portable fallback's exact bits, 8 lanes at a time ----
 * Lanes 0-7 and 8-15 of the 16 partial sums are two registers; a multiply then an add (no FMA: the plain loop,
 * compiled as ISO C, contracts nothing), the tail k and the lane reduction in the plain loop's order. So the
 * results equal rows_chunk_plain's bit for bit, and the plain loop stays the reference on CPUs without AVX2. */

#define AVX2 __attribute__((target("avx2")))

INLINE AVX2 __m256 load8_w(weights W, size_t i) {
    if (W.w16)
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(W.w16 + i))), 16));
    return _mm256_loadu_ps(W.w32 + i);
}

/* XR (1-2) rows of x times WB (1-2) weight rows from element w0 (row stride in). */
INLINE AVX2 void rows_block_avx2(float *y, int ldy, const float *x, weights W, size_t w0, int in, int XR, int WB,
                                 bool accumulate) {
    __m256 lo[2][2], hi[2][2];
#pragma GCC unroll 2
    for (int r = 0; r < XR; r++)
#pragma GCC unroll 2
        for (int j = 0; j < WB; j++) lo[r][j] = hi[r][j] = _mm256_setzero_ps();
    int k = 0;
    for (; k + 16 <= in; k += 16) {
        __m256 xlo[2], xhi[2];
#pragma GCC unroll 2
        for (int r = 0; r < XR; r++) {
            xlo[r] = _mm256_loadu_ps(x + (size_t)r * in + k);
            xhi[r] = _mm256_loadu_ps(x + (size_t)r * in + k + 8);
        }
#pragma GCC unroll 2
        for (int j = 0; j < WB; j++) {
            __m256 wlo = load8_w(W, w0 + (size_t)j * in + k), whi = load8_w(W, w0 + (size_t)j * in + k + 8);
#pragma GCC unroll 2
            for (int r = 0; r < XR; r++) {
                lo[r][j] = _mm256_add_ps(lo[r][j], _mm256_mul_ps(xlo[r], wlo));
                hi[r][j] = _mm256_add_ps(hi[r][j], _mm256_mul_ps(xhi[r], whi));
            }
        }
    }
    /* The plain loop's tail and lane sums, for the block's XR*WB elements side by side: each element's 16 adds
     * stay in order, but the elements' chains are independent (one after another they were most of the time). */
    float part[4][16], d[4];
#pragma GCC unroll 2
    for (int r = 0; r < XR; r++)
#pragma GCC unroll 2
        for (int j = 0; j < WB; j++) {
            float *pe = part[r * WB + j];
            _mm256_storeu_ps(pe, lo[r][j]);
            _mm256_storeu_ps(pe + 8, hi[r][j]);
            const float *xt = x + (size_t)r * in;
            const size_t wr = w0 + (size_t)j * in;
            for (int kk = k; kk < in; kk++)
                pe[kk & 15] += xt[kk] * (W.w16 ? widen_bf16(W.w16[wr + kk]) : W.w32[wr + kk]);
        }
    const int n_el = XR * WB;
#pragma GCC unroll 4
    for (int e = 0; e < n_el; e++) d[e] = 0;
#pragma GCC unroll 16
    for (int l = 0; l < 16; l++)
#pragma GCC unroll 4
        for (int e = 0; e < n_el; e++) d[e] += part[e][l];
#pragma GCC unroll 2
    for (int r = 0; r < XR; r++)
#pragma GCC unroll 2
        for (int j = 0; j < WB; j++) {
            float *dst = y + (size_t)r * ldy + j;
            *dst = accumulate ? *dst + d[r * WB + j] : d[r * WB + j];
        }
}

/* ---- AVX2, weight chunk transposed: the same bits without a lane reduction per element ----
 * The plain loop's element is d = ((0 + part[0]) + part[1]) + ... + part[15], part[l] the products of
 * k = l, l + 16, ... added in k order. Here lane j of a register is output o0 + j: part[l] of 8 outputs is one
 * chain over the transposed weights, and d is 16 vector adds, so 8 outputs share every instruction. */

/* Widest input the transposed chunk (on the thread's stack: 16 x in floats, 64 KB) is used for. */
#define ROWS_T_MAX_IN 1024

/* v[i] lane j <- v[j] lane i */
INLINE AVX2 void transpose8_avx2(__m256 v[8]) {
    __m256 t[8], u[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(v[i], v[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(v[i], v[i + 1]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
#pragma GCC unroll 8
    for (int i = 0; i < 4; i++) {
        v[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        v[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

/* XR (1-4) rows of x times the chunk's 16 transposed weight columns wt[in, 16]; n (1-16) outputs are stored. */
INLINE AVX2 void rows_tblock_avx2(float *y, int ldy, const float *x, int in, const float *wt, int XR, int n,
                                  bool accumulate) {
    float d[4][16] __attribute__((aligned(32)));
#pragma GCC unroll 4
    for (int r = 0; r < XR; r++) {
        _mm256_store_ps(d[r], _mm256_setzero_ps());
        _mm256_store_ps(d[r] + 8, _mm256_setzero_ps());
    }
    for (int l = 0; l < 16; l++) {
        __m256 a[4][2];
#pragma GCC unroll 4
        for (int r = 0; r < XR; r++) a[r][0] = a[r][1] = _mm256_setzero_ps();
        for (int k = l; k < in; k += 16) {
            const __m256 w0 = _mm256_load_ps(wt + (size_t)k * 16), w1 = _mm256_load_ps(wt + (size_t)k * 16 + 8);
#pragma GCC unroll 4
            for (int r = 0; r < XR; r++) {
                const __m256 xb = _mm256_broadcast_ss(x + (size_t)r * in + k);
                a[r][0] = _mm256_add_ps(a[r][0], _mm256_mul_ps(xb, w0));
                a[r][1] = _mm256_add_ps(a[r][1], _mm256_mul_ps(xb, w1));
            }
        }
#pragma GCC unroll 4
        for (int r = 0; r < XR; r++) {
            _mm256_store_ps(d[r], _mm256_add_ps(_mm256_load_ps(d[r]), a[r][0]));
            _mm256_store_ps(d[r] + 8, _mm256_add_ps(_mm256_load_ps(d[r] + 8), a[r][1]));
        }
    }
    if (n == 16) { /* a full chunk: vector stores (the same adds when accumulating) */
#pragma GCC unroll 4
        for (int r = 0; r < XR; r++) {
            float *dst = y + (size_t)r * ldy;
            __m256 lo = _mm256_load_ps(d[r]), hi = _mm256_load_ps(d[r] + 8);
            if (accumulate) lo = _mm256_add_ps(_mm256_loadu_ps(dst), lo), hi = _mm256_add_ps(_mm256_loadu_ps(dst + 8), hi);
            _mm256_storeu_ps(dst, lo);
            _mm256_storeu_ps(dst + 8, hi);
        }
        return;
    }
    for (int r = 0; r < XR; r++)
        for (int j = 0; j < n; j++) {
            float *dst = y + (size_t)r * ldy + j;
            *dst = accumulate ? *dst + d[r][j] : d[r][j];
        }
}

AVX2 static void rows_chunk_avx2_t(float *y, const float *x, weights W, int T, int in, int out, int o0, int o1,
                                   bool accumulate) {
    float wt[ROWS_T_MAX_IN * 16] __attribute__((aligned(32))); /* [in, 16]: W[o0 + j, k] at k * 16 + j, 0 past o1 */
    const int n = o1 - o0;
    for (int j0 = 0; j0 < 16; j0 += 8) {
        /* 8 x 8 tiles: 8 weight rows (zeros past o1) become 8 columns of wt */
        const int rows = S2D_MAX(0, S2D_MIN(8, n - j0));
        int k = 0;
        for (; k + 8 <= in; k += 8) {
            __m256 v[8];
            if (rows == 8) { /* every chunk but the last: no per-row test */
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++) v[j] = load8_w(W, (size_t)(o0 + j0 + j) * in + k);
            } else {
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++)
                    v[j] = j < rows ? load8_w(W, (size_t)(o0 + j0 + j) * in + k) : _mm256_setzero_ps();
            }
            transpose8_avx2(v);
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) _mm256_store_ps(wt + (size_t)(k + i) * 16 + j0, v[i]);
        }
        for (; k < in; k++)
            for (int j = 0; j < 8; j++) {
                const size_t wi = (size_t)(o0 + j0 + j) * in + k;
                wt[(size_t)k * 16 + j0 + j] = j < rows ? (W.w16 ? widen_bf16(W.w16[wi]) : W.w32[wi]) : 0.0f;
            }
    }
    int t = 0;
    for (; t + 4 <= T; t += 4) rows_tblock_avx2(y + (size_t)t * out + o0, out, x + (size_t)t * in, in, wt, 4, n, accumulate);
    const float *xt = x + (size_t)t * in;
    float *yt = y + (size_t)t * out + o0;
    switch (T - t) {
    case 3: rows_tblock_avx2(yt, out, xt, in, wt, 3, n, accumulate); break;
    case 2: rows_tblock_avx2(yt, out, xt, in, wt, 2, n, accumulate); break;
    case 1: rows_tblock_avx2(yt, out, xt, in, wt, 1, n, accumulate); break;
    default: break;
    }
}

AVX2 static void rows_chunk_avx2(float *y, const float *x, weights W, int T, int in, int out, int o0, int o1,
                                 bool accumulate) {
    int t = 0;
    for (; t + 2 <= T; t += 2) {
        const float *xt = x + (size_t)t * in;
        float *yt = y + (size_t)t * out;
        int o = o0;
        for (; o + 2 <= o1; o += 2) rows_block_avx2(yt + o, out, xt, W, (size_t)o * in, in, 2, 2, accumulate);
        for (; o < o1; o++) rows_block_avx2(yt + o, out, xt, W, (size_t)o * in, in, 2, 1, accumulate);
    }
    for (; t < T; t++) {
        const float *xt = x + (size_t)t * in;
        float *yt = y + (size_t)t * out;
        int o = o0;
        for (; o + 2 <= o1; o += 2) rows_block_avx2(yt + o, out, xt, W, (size_t)o * in, in, 1, 2, accumulate);
        for (; o < o1; o++) rows_block_avx2(yt + o, out, xt, W, (size_t)o * in, in, 1, 1, accumulate);
    }
}

/* -1: not decided yet; 0: the plain loop; 1: AVX2 (same bits). */
static int g_rows_avx2 = -1;

static bool have_avx2(void) {
    int got = __atomic_load_n(&g_rows_avx2, __ATOMIC_ACQUIRE);
    if (got < 0) {
        __builtin_cpu_init();
        got = __builtin_cpu_supports("avx2") ? 1 : 0;
        __atomic_store_n(&g_rows_avx2, got, __ATOMIC_RELEASE);
    }
    return got == 1;
}

void cpu_rows_force_plain(bool plain) {
    __builtin_cpu_init();
    __atomic_store_n(&g_rows_avx2, !plain && __builtin_cpu_supports("avx2") ? 1 : 0, __ATOMIC_RELEASE);
}

static void linear_rows(float *y, const float *x, weights W, int T, int in, int out, bool accumulate) {
    if (T <= 0 || out <= 0) return;
    const bool avx = have_avx512(), avx2 = !avx && have_avx2(), bf16 = W.w16 != NULL;
    const int n_chunks = (out + ROWS_WCHUNK - 1) / ROWS_WCHUNK;
    /* Tiny products (qwen3-small, one row) do not pay for a parallel region. */
    const bool parallel = (double)T * in * out >= 65536.0;
#pragma omp parallel for schedule(static) if (parallel)
    for (int c = 0; c < n_chunks; c++) {
        int o0 = c * ROWS_WCHUNK, o1 = S2D_MIN(out, o0 + ROWS_WCHUNK);
        if (avx && bf16)
            rows_chunk_avx512_bf16(y, x, W, T, in, out, o0, o1, accumulate);
        else if (avx)
            rows_chunk_avx512_f32(y, x, W, T, in, out, o0, o1, accumulate);
        else if (avx2 && T >= 4 && in <= ROWS_T_MAX_IN)
            rows_chunk_avx2_t(y, x, W, T, in, out, o0, o1, accumulate);
        else if (avx2)
            rows_chunk_avx2(y, x, W, T, in, out, o0, o1, accumulate);
        else
            rows_chunk_plain(y, x, W, T, in, out, o0, o1, accumulate);
    }
}

void cpu_linear_rows(float *y, const float *x, const float *W, int T, int in, int out, bool accumulate) {
    linear_rows(y, x, (weights){W, NULL}, T, in, out, accumulate);
}

void cpu_linear_rows_bf16(float *y, const float *x, const uint16_t *W16, int T, int in, int out, bool accumulate) {
    linear_rows(y, x, (weights){NULL, W16}, T, in, out, accumulate);
}

/* ---- bf16 mirror of fp32 weights ---- */

typedef uint32_t __attribute__((may_alias)) f32_bits;

/* Words per piece: 64 KB of fp32, checked then compared while in cache. */
#define MIRROR_PIECE 16384

/* One piece [i0, i1): -1 if some word is not bf16-exact, else 1 if dst was rewritten, 0 if it already matched. */
AVX512 static int mirror_piece_avx512(uint16_t *dst, const f32_bits *src, size_t i0, size_t i1, bool fresh) {
    const __m512i lowmask = _mm512_set1_epi32(0xFFFF);
    __m512i low = _mm512_setzero_si512();
    __m256i diff = _mm256_setzero_si256();
    size_t i = i0;
    for (; i + 16 <= i1; i += 16) {
        __m512i v = _mm512_loadu_si512((const void *)(src + i));
        low = _mm512_or_si512(low, _mm512_and_si512(v, lowmask));
        __m256i hi = _mm512_cvtepi32_epi16(_mm512_srli_epi32(v, 16));
        if (fresh)
            _mm256_storeu_si256((__m256i *)(dst + i), hi);
        else
            diff = _mm256_or_si256(diff, _mm256_xor_si256(hi, _mm256_loadu_si256((const __m256i *)(dst + i))));
    }
    uint32_t low_tail = 0, diff_tail = 0;
    for (size_t j = i; j < i1; j++) {
        low_tail |= src[j] & 0xFFFFu;
        if (fresh)
            dst[j] = (uint16_t)(src[j] >> 16);
        else
            diff_tail |= (uint32_t)dst[j] ^ (src[j] >> 16);
    }
    if (low_tail || _mm512_test_epi32_mask(low, low)) return -1;
    if (fresh) return 1;
    if (!diff_tail && _mm256_testz_si256(diff, diff)) return 0;
    for (size_t j = i0; j < i1; j++) dst[j] = (uint16_t)(src[j] >> 16);
    return 1;
}

static int mirror_piece_plain(uint16_t *dst, const f32_bits *src, size_t i0, size_t i1, bool fresh) {
    uint32_t low = 0, diff = fresh ? 1 : 0;
    for (size_t j = i0; j < i1; j++) low |= src[j] & 0xFFFFu;
    if (low) return -1;
    for (size_t j = i0; j < i1 && !fresh; j++) diff |= (uint32_t)dst[j] ^ (src[j] >> 16);
    if (!diff) return 0;
    for (size_t j = i0; j < i1; j++) dst[j] = (uint16_t)(src[j] >> 16);
    return 1;
}

bool cpu_bf16_mirror(uint16_t *dst, const float *src, size_t n, bool fresh) {
    const f32_bits *bits = (const f32_bits *)src;
    const bool avx = have_avx512();
    const size_t n_pieces = (n + MIRROR_PIECE - 1) / MIRROR_PIECE;
    int bad = 0;
#pragma omp parallel for schedule(dynamic, 16) if (n_pieces > 1)
    for (size_t c = 0; c < n_pieces; c++) {
        if (__atomic_load_n(&bad, __ATOMIC_RELAXED)) continue;
        const size_t i0 = c * MIRROR_PIECE, i1 = S2D_MIN(n, i0 + MIRROR_PIECE);
        int r = avx ? mirror_piece_avx512(dst, bits, i0, i1, fresh) : mirror_piece_plain(dst, bits, i0, i1, fresh);
        if (r < 0) __atomic_store_n(&bad, 1, __ATOMIC_RELAXED);
    }
    return !bad;
}

/* ---- attention of single query rows against caches ---- */

size_t cpu_attention_decode_scratch_floats(int max_ctx) {
    return (size_t)omp_get_max_threads() * (size_t)S2D_MAX(max_ctx, 1);
}

/* softmax(q K^T * scale) V for one (row, head); sc: [len] scratch. hd must be a multiple of 16 (checked). */
AVX512 static void decode_head_avx512(float *o, const float *qr, const float *K, const float *V, int ldk, int len,
                                      int hd, float scale, float *sc) {
    float mx = -INFINITY;
    for (int j = 0; j < len; j++) {
        const float *kj = K + (size_t)j * ldk;
        __m512 acc = _mm512_setzero_ps();
        for (int c = 0; c < hd; c += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(qr + c), _mm512_loadu_ps(kj + c), acc);
        float s = _mm512_reduce_add_ps(acc) * scale;
        sc[j] = s;
        mx = s > mx ? s : mx;
    }
    double sum = 0;
    for (int j = 0; j < len; j++) {
        sc[j] = expf(sc[j] - mx);
        sum += sc[j];
    }
    const float inv = (float)(1.0 / sum);
    /* hd <= 256: the output row lives in registers. */
    __m512 acc[16];
    const int nv = hd / 16;
    for (int v = 0; v < nv; v++) acc[v] = _mm512_setzero_ps();
    for (int j = 0; j < len; j++) {
        const float *vj = V + (size_t)j * ldk;
        __m512 p = _mm512_set1_ps(sc[j] * inv);
        for (int v = 0; v < nv; v++) acc[v] = _mm512_fmadd_ps(p, _mm512_loadu_ps(vj + 16 * v), acc[v]);
    }
    for (int v = 0; v < nv; v++) _mm512_storeu_ps(o + 16 * v, acc[v]);
}

/* q . k * scale, the products added in order (the portable score of one key) */
static inline float score_plain(const float *qr, const float *kj, int hd, float scale) {
    float d = 0;
    for (int c = 0; c < hd; c++) d += qr[c] * kj[c];
    return d * scale;
}

static void decode_head_plain(float *o, const float *qr, const float *K, const float *V, int ldk, int len, int hd,
                              float scale, float *sc) {
    float mx = -INFINITY;
    for (int j = 0; j < len; j++) {
        sc[j] = score_plain(qr, K + (size_t)j * ldk, hd, scale);
        mx = sc[j] > mx ? sc[j] : mx;
    }
    double sum = 0;
    for (int j = 0; j < len; j++) {
        sc[j] = expf(sc[j] - mx);
        sum += sc[j];
    }
    float inv = (float)(1.0 / sum);
    memset(o, 0, sizeof(float) * hd);
    for (int j = 0; j < len; j++) {
        const float *vj = V + (size_t)j * ldk;
        float p = sc[j] * inv;
        for (int c = 0; c < hd; c++) o[c] += p * vj[c];
    }
}

/* decode_head_plain's bits in AVX2 (hd a multiple of 8): the scores of 8 keys at once, lane e key j + e (8 x 8
 * tiles of K transposed, so each lane's dot product adds its hd products in the plain loop's order), the same max,
 * expf and double sum (vm_exp_sum's portable loop), and the weighted sum of V rows 8 columns at a time (each
 * column's chain over j as in the plain loop). Multiplies and adds stay separate, as the plain loop compiled as ISO C. */
AVX2 static void decode_head_avx2(float *o, const float *qr, const float *K, const float *V, int ldk, int len, int hd,
                                  float scale, float *sc) {
    const __m256 vscale = _mm256_set1_ps(scale);
    int j = 0;
    for (; j + 8 <= len; j += 8) {
        __m256 d = _mm256_setzero_ps();
        for (int c0 = 0; c0 < hd; c0 += 8) {
            __m256 kt[8];
#pragma GCC unroll 8
            for (int e = 0; e < 8; e++) kt[e] = _mm256_loadu_ps(K + (size_t)(j + e) * ldk + c0);
            transpose8_avx2(kt); /* kt[i] lane e: K[j + e][c0 + i] */
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) d = _mm256_add_ps(d, _mm256_mul_ps(_mm256_broadcast_ss(qr + c0 + i), kt[i]));
        }
        _mm256_storeu_ps(sc + j, _mm256_mul_ps(d, vscale));
    }
    for (; j < len; j++) sc[j] = score_plain(qr, K + (size_t)j * ldk, hd, scale);
    float mx = -INFINITY;
    for (j = 0; j < len; j++) mx = sc[j] > mx ? sc[j] : mx;
    /* the plain loop's expf and double sum, in order (no AVX-512 here, so vm_exp_sum runs its portable loop) */
    const float inv = (float)(1.0 / vm_exp_sum(sc, sc, len, mx));
    for (int c0 = 0; c0 < hd; c0 += 32) {
        /* 32 columns (4 registers) per pass over the keys */
        const int nv = S2D_MIN(4, (hd - c0) / 8);
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        for (j = 0; j < len; j++) {
            const float *vj = V + (size_t)j * ldk + c0;
            const __m256 p = _mm256_set1_ps(sc[j] * inv);
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++)
                if (v < nv) acc[v] = _mm256_add_ps(acc[v], _mm256_mul_ps(p, _mm256_loadu_ps(vj + 8 * v)));
        }
        for (int v = 0; v < nv; v++) _mm256_storeu_ps(o + c0 + 8 * v, acc[v]);
    }
}

void cpu_attention_decode(float *out, const float *q, const float *const *k_rows, const float *const *v_rows,
                         const int *ctx_len, int n, int nh, int nkv, int hd, float *scratch) {
    int group = nh / nkv, ldk = nkv * hd;
    float scale = 1.0f / sqrtf((float)hd);
    int max_ctx = 1;
    long work = 0;
    for (int r = 0; r < n; r++) {
        max_ctx = S2D_MAX(max_ctx, ctx_len[r]);
        work += ctx_len[r];
    }
    const bool avx = have_avx512() && hd % 16 == 0 && hd <= 256, avx2 = !have_avx512() && have_avx2() && hd % 8 == 0;
    const bool parallel = work * nh * hd >= 32768;
#pragma omp parallel for schedule(dynamic) if (parallel)
    for (int idx = 0; idx < n * nh; idx++) {
        int r = idx / nh, h = idx % nh, g = h / group;
        float *sc = scratch + (size_t)max_ctx * (size_t)omp_get_thread_num();
        const float *qr = q + ((size_t)r * nh + h) * hd;
        const float *K = k_rows[r] + (size_t)g * hd, *V = v_rows[r] + (size_t)g * hd;
        float *o = out + ((size_t)r * nh + h) * hd;
        if (avx)
            decode_head_avx512(o, qr, K, V, ldk, ctx_len[r], hd, scale, sc);
        else if (avx2)
            decode_head_avx2(o, qr, K, V, ldk, ctx_len[r], hd, scale, sc);
        else
            decode_head_plain(o, qr, K, V, ldk, ctx_len[r], hd, scale, sc);
    }
}
