/* bench_portable: the portable CPU paths (S2D_NO_AVX512, what `kernels: portable` studies run) against the
 * plain loops whose bits they reproduce and against OpenBLAS on the same shapes, one thread:
 *   linear_rows  y[T, out] = x[T, in] W[out, in]^T at the study's decode shapes (GMAC/s)
 *   decode attention of one query row against a cached sequence (ns per row and head)
 *   expf over a softmax-like row (ns per element), 8-lane glibc replica against the scalar call
 * Every fast path is checked bitwise against its plain loop before it is timed (exit 1 if not).
 * usage: bench_portable */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/timer.h"
#include "ops/ops.h"
#include "ops/ops_cpu.h"
#include "ops/ops_vmath.h"

static float *filled(size_t n, unsigned seed, float scale) {
    float *p = xmalloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = scale * ((float)(seed >> 8) / 16777216.0f - 0.5f);
    }
    return p;
}

/* best seconds per call over 7 timed batches of `reps` calls */
#define BEST_OF(reps, call)                                                                                         \
    ({                                                                                                              \
        double best_ = 1e30;                                                                                        \
        for (int b_ = 0; b_ < 7; b_++) {                                                                            \
            double t0_ = time_now();                                                                                \
            for (int r_ = 0; r_ < (reps); r_++) call;                                                               \
            best_ = S2D_MIN(best_, (time_now() - t0_) / (reps));                                                    \
        }                                                                                                           \
        best_;                                                                                                      \
    })

static int bad = 0;

static void bench_rows(int T, int in, int out) {
    float *x = filled((size_t)T * in, 1, 1), *W = filled((size_t)out * in, 2, 0.5f);
    float *y = xmalloc(sizeof(float) * T * out), *y0 = xmalloc(sizeof(float) * T * out);
    const double macs = (double)T * in * out;
    const int reps = S2D_MAX(1, (int)(2e6 / macs));
    cpu_rows_force_plain(true);
    cpu_linear_rows(y0, x, W, T, in, out, false);
    const double plain = BEST_OF(reps, cpu_linear_rows(y0, x, W, T, in, out, false));
    cpu_rows_force_plain(false);
    cpu_linear_rows(y, x, W, T, in, out, false);
    if (memcmp(y, y0, sizeof(float) * T * out) != 0) bad = 1, printf("linear_rows %dx%dx%d: NOT the plain loop's bits\n", T, in, out);
    const double fast = BEST_OF(reps, cpu_linear_rows(y, x, W, T, in, out, false));
    const double blas = BEST_OF(reps, cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, out, in, 1.0f, x, in, W,
                                                  in, 0.0f, y, out));
    /* the peer: OpenBLAS on the same product (not row-exact: its results may depend on the other rows) */
    printf("linear_rows  T %2d in %3d out %3d  %6.2f GMAC/s  plain loop %5.2f (%4.1fx faster)  openblas sgemm %6.2f "
           "(%.2fx its speed)\n", T, in, out, macs / fast / 1e9, macs / plain / 1e9, plain / fast, macs / blas / 1e9,
           blas / fast);
    free(x), free(W), free(y), free(y0);
}

static void bench_attention(int n, int ctx) {
    const int nh = 4, nkv = 2, hd = 32, qd = nh * hd, kvd = nkv * hd;
    float *q = filled((size_t)n * qd, 3, 1), *k = filled((size_t)ctx * kvd, 4, 1), *v = filled((size_t)ctx * kvd, 5, 1);
    float *o = xmalloc(sizeof(float) * n * qd), *o0 = xmalloc(sizeof(float) * n * qd);
    float *scr = xmalloc(sizeof(float) * cpu_attention_decode_scratch_floats(ctx));
    const float **kr = xmalloc(sizeof(float *) * n), **vr = xmalloc(sizeof(float *) * n);
    int *len = xmalloc(sizeof(int) * n);
    for (int r = 0; r < n; r++) kr[r] = k, vr[r] = v, len[r] = ctx;
    const int reps = 200;
    cpu_rows_force_plain(true);
    const double plain = BEST_OF(reps, cpu_attention_decode(o0, q, kr, vr, len, n, nh, nkv, hd, scr));
    cpu_rows_force_plain(false);
    const double fast = BEST_OF(reps, cpu_attention_decode(o, q, kr, vr, len, n, nh, nkv, hd, scr));
    if (memcmp(o, o0, sizeof(float) * n * qd) != 0) bad = 1, printf("attention: NOT the plain loop's bits\n");
    const double per = 1e9 / ((double)n * nh);
    printf("attention    %d rows x %d heads, context %d, head %d  %7.1f ns/row-head  plain loop %7.1f (%.1fx faster)\n", n,
           nh, ctx, hd, fast * per, plain * per, plain / fast);
    free(q), free(k), free(v), free(o), free(o0), free(scr), free(kr), free(vr), free(len);
}

static void bench_expf(int n) {
    float *x = filled((size_t)n, 6, 40), *e = xmalloc(sizeof(float) * n), *e0 = xmalloc(sizeof(float) * n);
    const int reps = 2000;
    vm_force_scalar_expf(true);
    double s0 = vm_exp_sum(e0, x, n, 20.0f);
    const double scalar = BEST_OF(reps, vm_exp_sum(e0, x, n, 20.0f));
    vm_force_scalar_expf(false);
    double s1 = vm_exp_sum(e, x, n, 20.0f);
    if (s0 != s1 || memcmp(e, e0, sizeof(float) * n) != 0) bad = 1, printf("expf: NOT the scalar call's bits\n");
    const double fast = BEST_OF(reps, vm_exp_sum(e, x, n, 20.0f));
    printf("exp_sum      %d logits in [-40, 0] (x - 20)  %6.2f ns/element  scalar expf %6.2f (%.1fx faster)\n", n,
           fast * 1e9 / n, scalar * 1e9 / n, scalar / fast);
    free(x), free(e), free(e0);
}

int main(void) {
    ops_set_portable(true);
    printf("portable paths (no AVX-512; one thread); the fast paths' bits checked against the plain loops first\n");
    const int shapes[][3] = {{16, 96, 96}, {16, 96, 256}, {16, 256, 96}, {16, 96, 512}, {32, 96, 256}, {1, 96, 256}};
    for (int s = 0; s < 6; s++) bench_rows(shapes[s][0], shapes[s][1], shapes[s][2]);
    bench_attention(16, 33);
    bench_expf(512);
    return bad;
}
