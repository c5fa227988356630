/* test_backend_ops.c: every op of ops.h on every compiled backend, in the style of ggml's test-backend-ops.
 *
 * 1. Backend vs CPU: for every backend that sees a device (ops_backends; a fresh ops_open'd "cpu" queue
 *    included, so with only the CPU compiled in this checks the upload / op / download path), each op runs with
 *    inputs uploaded by ops_upload and outputs read back by ops_download, and is compared with ops_cpu()'s
 *    result. The CPU backend against itself must agree BITWISE (it is deterministic); another backend within
 *    fp32 tolerances (looser for bf16 weights).
 * 2. The CPU backend against double-precision references written here (plain loops in double).
 * 3. Awkward shapes throughout: T = 1, dims that are not multiples of 16, GQA 1/2/4, sequences longer than one
 *    64-row attention block, packed sequences of unequal lengths, V = 37 and 1000, top-k with k = 1 and k = V.
 * 4. Backward ops against central finite differences (in double) of the reference forward's scalar loss
 *    Σ dy·y (rmsnorm, rope, attention, swiglu; the vocabulary gradients of VOCAB_LOGP / FKL_FULL / FKL_TOPK).
 * The whole suite runs on the AVX-512 code paths (where the CPU has them) and again on the portable ones.
 *
 * Error measure: |got − ref| <= atol·S + rtol·|ref| elementwise, S = max|ref| over the array (atol is relative
 * to the array's scale); one check per compared array.
 *
 * What ops.h leaves open, and what this test therefore assumes from the CPU backend (a second backend must match):
 *  - op_sample's inverse-CDF draw runs over the ids in id order when no filter applies (top_k 0 or >= V and
 *    top_p 1), and over the candidates best first when one does (ops/sampler.c); ops.h only says "draw with u".
 *  - VOCAB_FKL_* without want_grad overwrite the logits chunk (with zeros) on the CPU: not compared here.
 *  - VOCAB_LOGP writes the forward log-probs to op->logp when given, with or without want_grad (ops.h). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/common.h"
#include "core/half.h"
#include "core/rng.h"
#include "ops/ops.h"
#include "ops/ops_cpu.h"
#include "ops/sampler.h"
#include "test.h"

/* Contract checks beyond what today's callers rely on (on: the CPU backend meets them). */
#ifndef STRICT_CONTRACTS
#define STRICT_CONTRACTS 1
#endif

static rng_stream R;
static ops_queue *CPU;        /* the reference backend: ops_cpu() */
static ops_queue *BQ[8];      /* one queue per compiled backend with a device (a fresh "cpu" queue first) */
static int NBQ;
static char CTX[200];         /* the case being run, for failure messages */
static const char *MODE = ""; /* CPU code path: avx512 / portable */

#define CTXF(...) snprintf(CTX, sizeof CTX, __VA_ARGS__)
#define REF_ATOL 1e-5
#define REF_RTOL 1e-5
#define FD_ATOL 1e-4
#define FD_RTOL 1e-4

/* ---------------- helpers ---------------- */

static float *randn(size_t n, double s) {
    float *p = xmalloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) p[i] = (float)(s * rng_next_normal(&R));
    return p;
}
static float *fbuf(size_t n) { return xcalloc(n ? n : 1, sizeof(float)); }
static double *dbuf(size_t n) { return xcalloc(n ? n : 1, sizeof(double)); }
static float *fdup(const float *x, size_t n) {
    float *p = fbuf(n);
    memcpy(p, x, sizeof(float) * n);
    return p;
}
static double *to_d(const float *x, size_t n) {
    double *d = dbuf(n);
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}
static void fill_f(float *x, size_t n, float v) {
    for (size_t i = 0; i < n; i++) x[i] = v;
}

static ops_tensor up(ops_queue *q, ops_dtype dt, const void *host, size_t n) {
    ops_tensor t = ops_alloc(q, dt, n ? n : 1);
    ops_upload(q, t, host, n);
    return t;
}
#define UPF(q, h, n) up((q), OPS_F32, (h), (n))
#define UPI(q, h, n) up((q), OPS_I32, (h), (n))

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* The normalised comparison, one check per array. */
static void cmp_dd(const char *what, const double *got, const double *ref, size_t n, double atol, double rtol) {
    double S = 0;
    for (size_t i = 0; i < n; i++) S = fmax(S, fabs(ref[i]));
    size_t bad = 0, worst = 0;
    double worst_r = -1;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(got[i] - ref[i]), tol = atol * S + rtol * fabs(ref[i]);
        if (e <= tol) continue;
        double r = isnan(e) ? INFINITY : e / fmax(tol, 1e-300);
        if (r > worst_r) worst_r = r, worst = i;
        bad++;
    }
    EXPECT(bad == 0, "%s [%s; %s]: %zu of %zu outside tolerance (atol %.1g·%.3g, rtol %.1g); worst [%zu] got %.9g "
                     "want %.9g",
           what, CTX, MODE, bad, n, atol, S, rtol, worst, n ? got[worst] : 0.0, n ? ref[worst] : 0.0);
}
static void cmp_fd(const char *what, const float *got, const double *ref, size_t n, double atol, double rtol) {
    double *g = to_d(got, n);
    cmp_dd(what, g, ref, n, atol, rtol);
    free(g);
}
static void cmp_ff(const char *what, const float *got, const float *ref, size_t n, double atol, double rtol) {
    double *g = to_d(got, n), *r = to_d(ref, n);
    cmp_dd(what, g, r, n, atol, rtol);
    free(g), free(r);
}
static void ref_check(const char *what, const float *got, const double *ref, size_t n) {
    cmp_fd(what, got, ref, n, REF_ATOL, REF_RTOL);
}
static void expect_ints(const char *what, const int32_t *got, const int32_t *want, size_t n) {
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i] && bad++ == 0) first = i;
    EXPECT(bad == 0, "%s [%s; %s]: %zu of %zu differ; first [%zu] got %d want %d", what, CTX, MODE, bad, n, first,
           n ? got[first] : 0, n ? want[first] : 0);
}

/* Backend result vs the CPU backend's: bitwise for the CPU backend itself, else fp32 (or bf16) tolerances. */
typedef enum { TOL_F32, TOL_BF16 } tol_kind;
static bool same_backend(ops_queue *q) { return q->be == CPU->be; }
static void be_tol(ops_queue *q, tol_kind k, double *atol, double *rtol) {
    if (same_backend(q)) *atol = 0, *rtol = 0;
    else if (k == TOL_F32) *atol = 1e-5, *rtol = 1e-4;
    else *atol = 1e-2, *rtol = 1e-2;
}
static void be_check(ops_queue *q, const char *what, const float *got, const float *cpu, size_t n, tol_kind k) {
    double atol, rtol;
    be_tol(q, k, &atol, &rtol);
    char w[160];
    snprintf(w, sizeof w, "%s: %s vs cpu", what, q->name);
    cmp_ff(w, got, cpu, n, atol, rtol);
}
static void be_check_d(ops_queue *q, const char *what, const double *got, const double *cpu, size_t n) {
    char w[160];
    snprintf(w, sizeof w, "%s: %s vs cpu", what, q->name);
    cmp_dd(w, got, cpu, n, same_backend(q) ? 0 : 1e-9, same_backend(q) ? 0 : 1e-6);
}
static void be_ints(ops_queue *q, const char *what, const int32_t *got, const int32_t *cpu, size_t n) {
    char w[160];
    snprintf(w, sizeof w, "%s: %s vs cpu", what, q->name);
    expect_ints(w, got, cpu, n);
}

/* Finite differences: d(loss)/d(x[i]) for every i by central differences in double, against the op's g. */
typedef double (*loss_fn)(void *ctx);
static void fd_check(const char *what, double *x, const float *g, size_t n, loss_fn f, void *ctx) {
    double *fd = dbuf(n);
    for (size_t i = 0; i < n; i++) {
        double keep = x[i], h = 1e-4 * fmax(1.0, fabs(keep));
        x[i] = keep + h;
        double lp = f(ctx);
        x[i] = keep - h;
        double lm = f(ctx);
        x[i] = keep;
        fd[i] = (lp - lm) / (2 * h);
    }
    char w[160];
    snprintf(w, sizeof w, "%s vs finite differences", what);
    cmp_fd(w, g, fd, n, FD_ATOL, FD_RTOL);
    free(fd);
}
static double dot_dd(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* ---------------- buffers ---------------- */

static void test_buffers(void) {
    static const ops_dtype dts[] = {OPS_F32, OPS_BF16, OPS_I32, OPS_F64};
    const size_t n = 37;
    for (int b = -1; b < NBQ; b++) {
        ops_queue *q = b < 0 ? CPU : BQ[b];
        for (int d = 0; d < 4; d++) {
            size_t bytes = n * ops_dtype_bytes(dts[d]);
            unsigned char *src = xmalloc(bytes), *dst = xmalloc(bytes), *zer = xmalloc(bytes);
            for (size_t i = 0; i < bytes; i++) src[i] = (unsigned char)rng_next_u32(&R);
            ops_tensor t = up(q, dts[d], src, n), u = ops_alloc(q, dts[d], n);
            memset(dst, 0xAB, bytes);
            ops_download(q, dst, t, n);
            EXPECT(memcmp(src, dst, bytes) == 0, "%s %s: upload/download round trip differs", q->name,
                   ops_dtype_name(dts[d]));
            ops_copy(q, u, t, n);
            ops_zero(q, ot_at(u, 5), 10); /* elements [5, 15) */
            ops_download(q, zer, u, n);
            size_t eb = ops_dtype_bytes(dts[d]);
            bool ok = memcmp(zer, src, 5 * eb) == 0 && memcmp(zer + 15 * eb, src + 15 * eb, (n - 15) * eb) == 0;
            for (size_t i = 5 * eb; i < 15 * eb; i++) ok = ok && zer[i] == 0;
            EXPECT(ok, "%s %s: ops_copy then ops_zero of [5, 15) via ot_at", q->name, ops_dtype_name(dts[d]));
            /* ops_stage: host data as a tensor of the queue */
            ops_tensor s = ops_stage(q, u, src, n);
            memset(dst, 0, bytes);
            ops_download(q, dst, s, n);
            EXPECT(memcmp(src, dst, bytes) == 0, "%s %s: ops_stage", q->name, ops_dtype_name(dts[d]));
            EXPECT((ops_host_ptr(q, t) != NULL) == q->host_memory, "%s: ops_host_ptr iff host memory", q->name);
            ops_sync(q);
            ops_free(q, t), ops_free(q, u);
            free(src), free(dst), free(zer);
        }
    }
}

/* ---------------- matmul, linear ---------------- */

static void ref_matmul(double *C, const float *A, const float *B, int M, int N, int K, bool ta, bool tb) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++)
                s += (double)(ta ? A[(size_t)k * M + i] : A[(size_t)i * K + k]) *
                     (tb ? B[(size_t)j * K + k] : B[(size_t)k * N + j]);
            C[(size_t)i * N + j] = s;
        }
}

static void run_matmul(ops_queue *q, const float *A, const float *B, const float *C0, int M, int N, int K, bool ta,
                       bool tb, bool acc, float *C) {
    ops_tensor a = UPF(q, A, (size_t)M * K), b = UPF(q, B, (size_t)K * N), c = UPF(q, C0, (size_t)M * N);
    op_matmul(q, c, a, b, M, N, K, ta, tb, acc);
    ops_download(q, C, c, (size_t)M * N);
    ops_free(q, a), ops_free(q, b), ops_free(q, c);
}

static void test_matmul(void) {
    static const int shapes[][3] = {{1, 40, 24}, {7, 5, 9}, {33, 72, 40}, {150, 24, 17}, {16, 16, 16}, {3, 1, 150}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        size_t mn = (size_t)M * N;
        float *A = randn((size_t)M * K, 1), *B = randn((size_t)K * N, 1), *C0 = randn(mn, 1);
        float *c_cpu = fbuf(mn), *c_be = fbuf(mn);
        double *ref = dbuf(mn);
        for (int mode = 0; mode < 8; mode++) {
            bool ta = mode & 1, tb = mode & 2, acc = mode & 4;
            CTXF("matmul M=%d N=%d K=%d trans_a=%d trans_b=%d accumulate=%d", M, N, K, ta, tb, acc);
            run_matmul(CPU, A, B, C0, M, N, K, ta, tb, acc, c_cpu);
            ref_matmul(ref, A, B, M, N, K, ta, tb);
            if (acc)
                for (size_t i = 0; i < mn; i++) ref[i] += C0[i];
            ref_check("C", c_cpu, ref, mn);
            for (int b = 0; b < NBQ; b++) {
                run_matmul(BQ[b], A, B, C0, M, N, K, ta, tb, acc, c_be);
                be_check(BQ[b], "C", c_be, c_cpu, mn, TOL_F32);
            }
        }
        free(A), free(B), free(C0), free(c_cpu), free(c_be), free(ref);
    }
}

/* variant: 0 dx overwritten + dW; 1 dx accumulated + dW; 2 dx absent; 3 dW absent. */
static void run_linear(ops_queue *q, const float *x, const float *W, const float *dy, const float *dx0,
                       const float *dW0, int T, int in, int out, int variant, float *y, float *dx, float *dW) {
    size_t nx = (size_t)T * in, nw = (size_t)out * in, ny = (size_t)T * out;
    ops_tensor tx = UPF(q, x, nx), tw = UPF(q, W, nw), tdy = UPF(q, dy, ny), ty = ops_alloc(q, OPS_F32, ny);
    ops_tensor tdx = UPF(q, dx0, nx), tdW = UPF(q, dW0, nw);
    op_linear_fwd(q, ty, tx, tw, T, in, out);
    op_linear_bwd(q, variant == 2 ? ot_none() : tdx, variant == 3 ? ot_none() : tdW, tdy, tx, tw, T, in, out,
                  variant == 1);
    ops_download(q, y, ty, ny);
    ops_download(q, dx, tdx, nx);
    ops_download(q, dW, tdW, nw);
    ops_free(q, tx), ops_free(q, tw), ops_free(q, tdy), ops_free(q, ty), ops_free(q, tdx), ops_free(q, tdW);
}

static void test_linear(void) {
    /* 40 → 48: a q projection with head_dim 24 != hidden 40 / 2 heads; 40 → 72: hidden → intermediate */
    static const int shapes[][3] = {{1, 40, 24}, {13, 40, 72}, {150, 24, 40}, {5, 17, 33}, {7, 40, 48}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int T = shapes[s][0], in = shapes[s][1], out = shapes[s][2];
        size_t nx = (size_t)T * in, nw = (size_t)out * in, ny = (size_t)T * out;
        float *x = randn(nx, 1), *W = randn(nw, 0.3), *dy = randn(ny, 1), *dx0 = randn(nx, 1), *dW0 = randn(nw, 1);
        float *y = fbuf(ny), *dx = fbuf(nx), *dW = fbuf(nw), *yb = fbuf(ny), *dxb = fbuf(nx), *dWb = fbuf(nw);
        double *ry = dbuf(ny), *rdx = dbuf(nx), *rdW = dbuf(nw);
        ref_matmul(ry, x, W, T, out, in, false, true);
        for (int v = 0; v < 4; v++) {
            CTXF("linear T=%d in=%d out=%d variant=%s", T, in, out,
                 (const char *[]){"dx=,dW+=", "dx+=,dW+=", "dx absent", "dW absent"}[v]);
            run_linear(CPU, x, W, dy, dx0, dW0, T, in, out, v, y, dx, dW);
            ref_check("y", y, ry, ny);
            ref_matmul(rdx, dy, W, T, in, out, false, false);
            for (size_t i = 0; i < nx; i++) rdx[i] = v == 2 ? dx0[i] : rdx[i] + (v == 1 ? dx0[i] : 0);
            ref_check("dx", dx, rdx, nx);
            ref_matmul(rdW, dy, x, out, in, T, true, false);
            for (size_t i = 0; i < nw; i++) rdW[i] = v == 3 ? dW0[i] : rdW[i] + dW0[i];
            ref_check("dW", dW, rdW, nw);
            for (int b = 0; b < NBQ; b++) {
                run_linear(BQ[b], x, W, dy, dx0, dW0, T, in, out, v, yb, dxb, dWb);
                be_check(BQ[b], "y", yb, y, ny, TOL_F32);
                be_check(BQ[b], "dx", dxb, dx, nx, TOL_F32);
                be_check(BQ[b], "dW", dWb, dW, nw, TOL_F32);
            }
        }
        free(x), free(W), free(dy), free(dx0), free(dW0), free(y), free(dx), free(dW), free(yb), free(dxb), free(dWb);
        free(ry), free(rdx), free(rdW);
    }
}

static void run_rows(ops_queue *q, const float *x, const void *W, bool bf16, const float *y0, int T, int in, int out,
                     bool acc, float *y) {
    ops_tensor tx = UPF(q, x, (size_t)T * in), ty = UPF(q, y0, (size_t)T * out);
    ops_tensor tw = up(q, bf16 ? OPS_BF16 : OPS_F32, W, (size_t)out * in);
    op_linear_rows(q, ty, tx, tw, T, in, out, acc);
    ops_download(q, y, ty, (size_t)T * out);
    ops_free(q, tx), ops_free(q, ty), ops_free(q, tw);
}

static void test_linear_rows(void) {
    static const int shapes[][3] = {{1, 40, 24}, {5, 72, 40}, {9, 17, 33}, {4, 16, 16}, {37, 40, 72}, {3, 8, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int T = shapes[s][0], in = shapes[s][1], out = shapes[s][2];
        size_t nx = (size_t)T * in, nw = (size_t)out * in, ny = (size_t)T * out;
        float *x = randn(nx, 1), *W = randn(nw, 0.3), *y0 = randn(ny, 1), *Wr = fbuf(nw);
        uint16_t *W16 = xmalloc(sizeof(uint16_t) * nw);
        f32_to_bf16_array(W, W16, nw);
        bf16_to_f32_array(W16, Wr, nw); /* the bf16 weights widened: bf16-exact fp32 */
        float *y = fbuf(ny), *yb = fbuf(ny), *yr = fbuf(ny), *y1 = fbuf(out);
        double *ref = dbuf(ny);
        for (int mode = 0; mode < 4; mode++) {
            bool bf16 = mode & 1, acc = mode & 2;
            CTXF("linear_rows T=%d in=%d out=%d W=%s accumulate=%d", T, in, out, bf16 ? "bf16" : "f32", acc);
            const float *Wd = bf16 ? Wr : W;
            run_rows(CPU, x, bf16 ? (const void *)W16 : W, bf16, y0, T, in, out, acc, y);
            ref_matmul(ref, x, Wd, T, out, in, false, true);
            if (acc)
                for (size_t i = 0; i < ny; i++) ref[i] += y0[i];
            ref_check("y", y, ref, ny);
            for (int b = -1; b < NBQ; b++) {
                ops_queue *q = b < 0 ? CPU : BQ[b];
                if (b >= 0) {
                    run_rows(q, x, bf16 ? (const void *)W16 : W, bf16, y0, T, in, out, acc, yb);
                    be_check(q, "y", yb, y, ny, bf16 ? TOL_BF16 : TOL_F32);
                }
                /* contract: row-invariant (row t alone gives bitwise row t of the batch) */
                int t = T / 2;
                run_rows(q, x + (size_t)t * in, bf16 ? (const void *)W16 : W, bf16, y0 + (size_t)t * out, 1, in, out,
                         acc, y1);
                run_rows(q, x, bf16 ? (const void *)W16 : W, bf16, y0, T, in, out, acc, yb);
                EXPECT(memcmp(y1, yb + (size_t)t * out, sizeof(float) * out) == 0,
                       "linear_rows [%s; %s] on %s: row %d alone differs from the row in the batch", CTX, MODE,
                       q->name, t);
                /* contract: bf16 W holding the bf16 bits of an f32 W gives bitwise the f32 result */
                if (bf16) {
                    run_rows(q, x, Wr, false, y0, T, in, out, acc, yr);
                    EXPECT(memcmp(yr, yb, sizeof(float) * ny) == 0,
                           "linear_rows [%s; %s] on %s: bf16 W differs from the same (bf16-exact) f32 W", CTX, MODE,
                           q->name);
                }
            }
        }
        free(x), free(W), free(y0), free(Wr), free(W16), free(y), free(yb), free(yr), free(y1), free(ref);
    }
}

/* ---------------- rmsnorm ---------------- */

static void ref_rms_fwd(double *y, double *rstd, const double *x, const double *w, int rows, int dim, double eps) {
    for (int r = 0; r < rows; r++) {
        const double *xr = x + (size_t)r * dim;
        double ss = 0;
        for (int i = 0; i < dim; i++) ss += xr[i] * xr[i];
        double rs = 1.0 / sqrt(ss / dim + eps);
        if (rstd) rstd[r] = rs;
        for (int i = 0; i < dim; i++) y[(size_t)r * dim + i] = w[i] * xr[i] * rs;
    }
}
/* Analytic backward: dx_i = rs w_i dy_i − rs³/dim · x_i Σ_j w_j dy_j x_j;  dw_i = Σ_rows dy_i x_i rs. */
static void ref_rms_bwd(double *dx, double *dw, const double *dy, const double *x, const double *w, int rows, int dim,
                        double eps) {
    for (int i = 0; i < dim; i++) dw[i] = 0;
    for (int r = 0; r < rows; r++) {
        const double *xr = x + (size_t)r * dim, *dyr = dy + (size_t)r * dim;
        double ss = 0, dot = 0;
        for (int i = 0; i < dim; i++) ss += xr[i] * xr[i], dot += w[i] * dyr[i] * xr[i];
        double rs = 1.0 / sqrt(ss / dim + eps);
        for (int i = 0; i < dim; i++) {
            dx[(size_t)r * dim + i] = rs * w[i] * dyr[i] - rs * rs * rs / dim * xr[i] * dot;
            dw[i] += dyr[i] * xr[i] * rs;
        }
    }
}

static void run_rms(ops_queue *q, const float *x, const float *w, const float *dy, const float *dx0, const float *dw0,
                    int rows, int dim, float eps, bool with_rstd, int variant, float *y, float *rstd, float *dx,
                    float *dw) {
    size_t n = (size_t)rows * dim;
    ops_tensor tx = UPF(q, x, n), tw = UPF(q, w, dim), ty = ops_alloc(q, OPS_F32, n), tr = ops_alloc(q, OPS_F32, rows);
    op_rmsnorm_fwd(q, ty, with_rstd ? tr : ot_none(), tx, tw, rows, dim, eps);
    ops_download(q, y, ty, n);
    if (with_rstd) {
        ops_download(q, rstd, tr, rows);
        ops_tensor tdy = UPF(q, dy, n), tdx = UPF(q, dx0, n), tdw = UPF(q, dw0, dim);
        op_rmsnorm_bwd(q, variant == 2 ? ot_none() : tdx, variant == 3 ? ot_none() : tdw, tdy, tx, tw, tr, rows, dim,
                       variant == 1);
        ops_download(q, dx, tdx, n);
        ops_download(q, dw, tdw, dim);
        ops_free(q, tdy), ops_free(q, tdx), ops_free(q, tdw);
    }
    ops_free(q, tx), ops_free(q, tw), ops_free(q, ty), ops_free(q, tr);
}

typedef struct {
    double *x, *w, *dy;
    int rows, dim;
    double eps;
} rms_ctx;
static double rms_loss(void *p) {
    rms_ctx *c = p;
    size_t n = (size_t)c->rows * c->dim;
    double *y = dbuf(n);
    ref_rms_fwd(y, NULL, c->x, c->w, c->rows, c->dim, c->eps);
    double l = dot_dd(y, c->dy, n);
    free(y);
    return l;
}

static void test_rmsnorm(void) {
    static const int shapes[][2] = {{1, 40}, {7, 24}, {150, 72}, {3, 8}, {2, 40}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int rows = shapes[s][0], dim = shapes[s][1];
        float eps = s % 2 ? 1e-5f : 1e-6f;
        size_t n = (size_t)rows * dim;
        float *x = randn(n, 1.5), *w = randn(dim, 1), *dy = randn(n, 1), *dx0 = randn(n, 1), *dw0 = randn(dim, 1);
        float *y = fbuf(n), *rstd = fbuf(rows), *dx = fbuf(n), *dw = fbuf(dim);
        float *yb = fbuf(n), *rb = fbuf(rows), *dxb = fbuf(n), *dwb = fbuf(dim);
        double *xd = to_d(x, n), *wd = to_d(w, dim), *dyd = to_d(dy, n);
        double *ry = dbuf(n), *rr = dbuf(rows), *rdx = dbuf(n), *rdw = dbuf(dim), *ex = dbuf(n), *ew = dbuf(dim);
        ref_rms_fwd(ry, rr, xd, wd, rows, dim, eps);
        ref_rms_bwd(rdx, rdw, dyd, xd, wd, rows, dim, eps);
        for (int v = 0; v < 4; v++) {
            CTXF("rmsnorm rows=%d dim=%d eps=%g variant=%s", rows, dim, eps,
                 (const char *[]){"dx=,dw+=", "dx+=,dw+=", "dx absent", "dw absent"}[v]);
            run_rms(CPU, x, w, dy, dx0, dw0, rows, dim, eps, true, v, y, rstd, dx, dw);
            ref_check("y", y, ry, n);
            ref_check("rstd", rstd, rr, rows);
            for (size_t i = 0; i < n; i++) ex[i] = v == 2 ? dx0[i] : rdx[i] + (v == 1 ? dx0[i] : 0);
            for (int i = 0; i < dim; i++) ew[i] = v == 3 ? dw0[i] : rdw[i] + dw0[i];
            ref_check("dx", dx, ex, n);
            ref_check("dw", dw, ew, dim);
            for (int b = 0; b < NBQ; b++) {
                run_rms(BQ[b], x, w, dy, dx0, dw0, rows, dim, eps, true, v, yb, rb, dxb, dwb);
                be_check(BQ[b], "y", yb, y, n, TOL_F32);
                be_check(BQ[b], "rstd", rb, rstd, rows, TOL_F32);
                be_check(BQ[b], "dx", dxb, dx, n, TOL_F32);
                be_check(BQ[b], "dw", dwb, dw, dim, TOL_F32);
            }
        }
        /* rstd absent: the same y */
        CTXF("rmsnorm rows=%d dim=%d rstd absent", rows, dim);
        for (int b = -1; b < NBQ; b++) {
            ops_queue *q = b < 0 ? CPU : BQ[b];
            run_rms(q, x, w, dy, dx0, dw0, rows, dim, eps, false, 0, yb, rb, dxb, dwb);
            be_check(q, "y (rstd absent)", yb, y, n, TOL_F32);
        }
        if (n <= 100) { /* finite differences of Σ dy·y: dx (overwrite) and dw (from zero) */
            CTXF("rmsnorm rows=%d dim=%d", rows, dim);
            float *z = fbuf(dim), *zx = fbuf(n);
            run_rms(CPU, x, w, dy, zx, z, rows, dim, eps, true, 0, y, rstd, dx, dw);
            rms_ctx c = {xd, wd, dyd, rows, dim, eps};
            fd_check("rmsnorm dx", xd, dx, n, rms_loss, &c);
            fd_check("rmsnorm dw", wd, dw, dim, rms_loss, &c);
            free(z), free(zx);
        }
        free(x), free(w), free(dy), free(dx0), free(dw0), free(y), free(rstd), free(dx), free(dw);
        free(yb), free(rb), free(dxb), free(dwb), free(xd), free(wd), free(dyd);
        free(ry), free(rr), free(rdx), free(rdw), free(ex), free(ew);
    }
}

/* ---------------- rope ---------------- */

static void rope_tables(int max_pos, int hd, float *cs, float *sn) {
    int half = hd / 2;
    for (int p = 0; p < max_pos; p++)
        for (int i = 0; i < half; i++) {
            double a = p * pow(10000.0, -2.0 * i / hd);
            cs[(size_t)p * half + i] = (float)cos(a);
            sn[(size_t)p * half + i] = (float)sin(a);
        }
}
/* inverse = the transpose (applied to a gradient). */
static void ref_rope(double *y, const double *x, const int32_t *pos, const float *cs, const float *sn, int T, int nh,
                     int hd, bool inverse) {
    int half = hd / 2;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < nh; h++) {
            const double *xh = x + ((size_t)t * nh + h) * hd;
            double *yh = y + ((size_t)t * nh + h) * hd;
            for (int i = 0; i < half; i++) {
                double c = cs[(size_t)pos[t] * half + i], s = sn[(size_t)pos[t] * half + i];
                if (inverse) s = -s;
                yh[i] = xh[i] * c - xh[i + half] * s;
                yh[i + half] = xh[i + half] * c + xh[i] * s;
            }
        }
}

static void run_rope(ops_queue *q, const float *x, const int32_t *pos, const float *cs, const float *sn, int T, int nh,
                     int hd, int max_pos, bool inverse, float *y) {
    size_t n = (size_t)T * nh * hd, nt = (size_t)max_pos * (hd / 2);
    ops_tensor tx = UPF(q, x, n), tp = UPI(q, pos, T), tc = UPF(q, cs, nt), ts = UPF(q, sn, nt);
    if (inverse) op_rope_bwd(q, tx, tp, tc, ts, T, nh, hd);
    else op_rope_fwd(q, tx, tp, tc, ts, T, nh, hd);
    ops_download(q, y, tx, n);
    ops_free(q, tx), ops_free(q, tp), ops_free(q, tc), ops_free(q, ts);
}

typedef struct {
    double *x, *dy;
    const int32_t *pos;
    const float *cs, *sn;
    int T, nh, hd;
} rope_ctx;
static double rope_loss(void *p) {
    rope_ctx *c = p;
    size_t n = (size_t)c->T * c->nh * c->hd;
    double *y = dbuf(n);
    ref_rope(y, c->x, c->pos, c->cs, c->sn, c->T, c->nh, c->hd, false);
    double l = dot_dd(y, c->dy, n);
    free(y);
    return l;
}

static void test_rope(void) {
    static const int shapes[][4] = {{1, 2, 8, 4}, {5, 3, 24, 16}, {150, 2, 8, 160}, {7, 4, 64, 32}, {3, 1, 2, 5}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int T = shapes[s][0], nh = shapes[s][1], hd = shapes[s][2], max_pos = shapes[s][3];
        size_t n = (size_t)T * nh * hd, nt = (size_t)max_pos * (hd / 2);
        float *x = randn(n, 1), *cs = fbuf(nt), *sn = fbuf(nt), *y = fbuf(n), *yb = fbuf(n);
        int32_t *pos = xmalloc(sizeof(int32_t) * T);
        for (int t = 0; t < T; t++) pos[t] = (int32_t)rng_next_below(&R, (uint64_t)max_pos);
        pos[T - 1] = max_pos - 1;
        rope_tables(max_pos, hd, cs, sn);
        double *xd = to_d(x, n), *ref = dbuf(n);
        for (int inv = 0; inv < 2; inv++) {
            CTXF("rope %s T=%d heads=%d hd=%d max_pos=%d", inv ? "bwd" : "fwd", T, nh, hd, max_pos);
            run_rope(CPU, x, pos, cs, sn, T, nh, hd, max_pos, inv, y);
            ref_rope(ref, xd, pos, cs, sn, T, nh, hd, inv);
            ref_check("x'", y, ref, n);
            for (int b = 0; b < NBQ; b++) {
                run_rope(BQ[b], x, pos, cs, sn, T, nh, hd, max_pos, inv, yb);
                be_check(BQ[b], "x'", yb, y, n, TOL_F32);
            }
        }
        if (n <= 200) { /* d(Σ dy·rope(x))/dx = rope_bwd(dy) */
            CTXF("rope T=%d heads=%d hd=%d", T, nh, hd);
            float *dy = randn(n, 1), *dx = fbuf(n);
            run_rope(CPU, dy, pos, cs, sn, T, nh, hd, max_pos, true, dx);
            double *dyd = to_d(dy, n);
            rope_ctx c = {xd, dyd, pos, cs, sn, T, nh, hd};
            fd_check("rope_bwd", xd, dx, n, rope_loss, &c);
            free(dy), free(dx), free(dyd);
        }
        free(x), free(cs), free(sn), free(y), free(yb), free(pos), free(xd), free(ref);
    }
}

/* ---------------- attention ---------------- */

/* One (row, head): softmax(q·K_j / sqrt(hd)) over j < len, out = Σ p_j V_j; returns the log-sum-exp. */
static double ref_attn_row(const double *qr, const double *K, const double *V, int ldk, int len, int hd, double *o,
                           double *p /* [len] */) {
    double scale = 1.0 / sqrt((double)hd), mx = -INFINITY;
    for (int j = 0; j < len; j++) {
        double d = 0;
        for (int c = 0; c < hd; c++) d += qr[c] * K[(size_t)j * ldk + c];
        p[j] = d * scale;
        mx = fmax(mx, p[j]);
    }
    double sum = 0;
    for (int j = 0; j < len; j++) sum += (p[j] = exp(p[j] - mx));
    for (int c = 0; c < hd; c++) o[c] = 0;
    for (int j = 0; j < len; j++) {
        p[j] /= sum;
        for (int c = 0; c < hd; c++) o[c] += p[j] * V[(size_t)j * ldk + c];
    }
    return mx + log(sum);
}

typedef struct {
    int n_seqs;
    int seq_start[8];
    int nh, nkv, hd;
} attn_shape;
static int attn_T(const attn_shape *a) { return a->seq_start[a->n_seqs]; }
static int attn_maxlen(const attn_shape *a) {
    int m = 1;
    for (int s = 0; s < a->n_seqs; s++) m = S2D_MAX(m, a->seq_start[s + 1] - a->seq_start[s]);
    return m;
}

static void ref_attn_fwd(const attn_shape *a, const double *q, const double *k, const double *v, double *out,
                         double *lse) {
    int nh = a->nh, nkv = a->nkv, hd = a->hd, group = nh / nkv, ldq = nh * hd, ldk = nkv * hd;
    double *p = dbuf(attn_maxlen(a));
    for (int s = 0; s < a->n_seqs; s++) {
        int b = a->seq_start[s], n = a->seq_start[s + 1] - b;
        for (int i = 0; i < n; i++)
            for (int h = 0; h < nh; h++) {
                int g = h / group;
                double l = ref_attn_row(q + (size_t)(b + i) * ldq + (size_t)h * hd, k + (size_t)b * ldk + (size_t)g * hd,
                                        v + (size_t)b * ldk + (size_t)g * hd, ldk, i + 1, hd,
                                        out + (size_t)(b + i) * ldq + (size_t)h * hd, p);
                if (lse) lse[(size_t)(b + i) * nh + h] = l;
            }
    }
    free(p);
}

/* Backward through the softmax Jacobian: dP_j = dO·V_j, dS_j = P_j (dP_j − Σ_k P_k dP_k),
 * dQ = scale Σ_j dS_j K_j, dK_j += scale dS_j Q, dV_j += P_j dO. */
static void ref_attn_bwd(const attn_shape *a, const double *q, const double *k, const double *v, const double *dout,
                         double *dq, double *dk, double *dv) {
    int nh = a->nh, nkv = a->nkv, hd = a->hd, group = nh / nkv, ldq = nh * hd, ldk = nkv * hd, T = attn_T(a);
    double scale = 1.0 / sqrt((double)hd);
    int maxlen = attn_maxlen(a);
    double *p = dbuf(maxlen), *dp = dbuf(maxlen), *o = dbuf(hd);
    memset(dk, 0, sizeof(double) * (size_t)T * ldk);
    memset(dv, 0, sizeof(double) * (size_t)T * ldk);
    for (int s = 0; s < a->n_seqs; s++) {
        int b = a->seq_start[s], n = a->seq_start[s + 1] - b;
        for (int i = 0; i < n; i++)
            for (int h = 0; h < nh; h++) {
                int g = h / group;
                const double *qr = q + (size_t)(b + i) * ldq + (size_t)h * hd, *dor = dout + (size_t)(b + i) * ldq + (size_t)h * hd;
                const double *K = k + (size_t)b * ldk + (size_t)g * hd, *V = v + (size_t)b * ldk + (size_t)g * hd;
                ref_attn_row(qr, K, V, ldk, i + 1, hd, o, p);
                double D = 0;
                for (int j = 0; j <= i; j++) {
                    dp[j] = 0;
                    for (int c = 0; c < hd; c++) dp[j] += dor[c] * V[(size_t)j * ldk + c];
                    D += p[j] * dp[j];
                }
                double *dqr = dq + (size_t)(b + i) * ldq + (size_t)h * hd;
                for (int c = 0; c < hd; c++) dqr[c] = 0;
                for (int j = 0; j <= i; j++) {
                    double ds = p[j] * (dp[j] - D);
                    double *dkj = dk + (size_t)(b + j) * ldk + (size_t)g * hd, *dvj = dv + (size_t)(b + j) * ldk + (size_t)g * hd;
                    for (int c = 0; c < hd; c++) {
                        dqr[c] += scale * ds * K[(size_t)j * ldk + c];
                        dkj[c] += scale * ds * qr[c];
                        dvj[c] += p[j] * dor[c];
                    }
                }
            }
    }
    free(p), free(dp), free(o);
}

static void run_attn(ops_queue *q, const attn_shape *a, const float *Q, const float *K, const float *V,
                     const float *dO, bool with_lse, float *out, float *lse, float *dq, float *dk, float *dv) {
    int T = attn_T(a);
    size_t nq = (size_t)T * a->nh * a->hd, nk = (size_t)T * a->nkv * a->hd;
    ops_reserve(q, attn_maxlen(a), 0, 0, 0);
    ops_tensor tq = UPF(q, Q, nq), tk = UPF(q, K, nk), tv = UPF(q, V, nk), to = ops_alloc(q, OPS_F32, nq);
    ops_tensor tl = ops_alloc(q, OPS_F32, (size_t)T * a->nh);
    op_attention_fwd(q, to, with_lse ? tl : ot_none(), tq, tk, tv, a->n_seqs, a->seq_start, a->nh, a->nkv, a->hd);
    ops_download(q, out, to, nq);
    if (with_lse) {
        ops_download(q, lse, tl, (size_t)T * a->nh);
        /* the gradients are OVERWRITTEN: start them as NaN */
        float *nan = fbuf(nq);
        fill_f(nan, nq, NAN);
        ops_tensor tdo = UPF(q, dO, nq), tdq = UPF(q, nan, nq), tdk = UPF(q, nan, nk), tdv = UPF(q, nan, nk);
        op_attention_bwd(q, tdq, tdk, tdv, tdo, tq, tk, tv, to, tl, a->n_seqs, a->seq_start, a->nh, a->nkv, a->hd);
        ops_download(q, dq, tdq, nq);
        ops_download(q, dk, tdk, nk);
        ops_download(q, dv, tdv, nk);
        ops_free(q, tdo), ops_free(q, tdq), ops_free(q, tdk), ops_free(q, tdv);
        free(nan);
    }
    ops_free(q, tq), ops_free(q, tk), ops_free(q, tv), ops_free(q, to), ops_free(q, tl);
}

typedef struct {
    const attn_shape *a;
    double *q, *k, *v, *dout;
} attn_ctx;
static double attn_loss(void *p) {
    attn_ctx *c = p;
    size_t nq = (size_t)attn_T(c->a) * c->a->nh * c->a->hd;
    double *o = dbuf(nq);
    ref_attn_fwd(c->a, c->q, c->k, c->v, o, NULL);
    double l = dot_dd(o, c->dout, nq);
    free(o);
    return l;
}

static void test_attention(void) {
    static const attn_shape shapes[] = {
        {1, {0, 1}, 2, 1, 8},                   /* T = 1, GQA 2 */
        {3, {0, 5, 6, 15}, 4, 2, 24},           /* unequal packed, one of length 1, GQA 2, hd 24 */
        {1, {0, 150}, 2, 2, 16},                /* longer than two 64-row blocks, GQA 1 */
        {4, {0, 3, 73, 74, 140}, 4, 1, 8},      /* GQA 4, sequences crossing a block */
        {3, {0, 17, 81, 146}, 2, 1, 40},        /* lengths 17, 64, 65; hd 40 */
        {2, {0, 4, 7}, 2, 1, 8},                /* small: finite differences */
        {1, {0, 5}, 4, 4, 6},                   /* GQA 1, hd 6 */
    };
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const attn_shape *a = &shapes[s];
        int T = attn_T(a);
        size_t nq = (size_t)T * a->nh * a->hd, nk = (size_t)T * a->nkv * a->hd, nl = (size_t)T * a->nh;
        char lens[64] = "";
        for (int i = 0; i < a->n_seqs; i++)
            snprintf(lens + strlen(lens), sizeof lens - strlen(lens), "%s%d", i ? "," : "",
                     a->seq_start[i + 1] - a->seq_start[i]);
        CTXF("attention lens={%s} nh=%d nkv=%d hd=%d", lens, a->nh, a->nkv, a->hd);
        float *Q = randn(nq, 1), *K = randn(nk, 1), *V = randn(nk, 1), *dO = randn(nq, 1);
        float *o = fbuf(nq), *l = fbuf(nl), *dq = fbuf(nq), *dk = fbuf(nk), *dv = fbuf(nk);
        float *ob = fbuf(nq), *lb = fbuf(nl), *dqb = fbuf(nq), *dkb = fbuf(nk), *dvb = fbuf(nk);
        double *Qd = to_d(Q, nq), *Kd = to_d(K, nk), *Vd = to_d(V, nk), *dOd = to_d(dO, nq);
        double *ro = dbuf(nq), *rl = dbuf(nl), *rdq = dbuf(nq), *rdk = dbuf(nk), *rdv = dbuf(nk);
        run_attn(CPU, a, Q, K, V, dO, true, o, l, dq, dk, dv);
        ref_attn_fwd(a, Qd, Kd, Vd, ro, rl);
        ref_attn_bwd(a, Qd, Kd, Vd, dOd, rdq, rdk, rdv);
        ref_check("out", o, ro, nq);
        ref_check("lse", l, rl, nl);
        ref_check("dq", dq, rdq, nq);
        ref_check("dk", dk, rdk, nk);
        ref_check("dv", dv, rdv, nk);
        for (int b = -1; b < NBQ; b++) {
            ops_queue *q = b < 0 ? CPU : BQ[b];
            if (b >= 0) {
                run_attn(q, a, Q, K, V, dO, true, ob, lb, dqb, dkb, dvb);
                be_check(q, "out", ob, o, nq, TOL_F32);
                be_check(q, "lse", lb, l, nl, TOL_F32);
                be_check(q, "dq", dqb, dq, nq, TOL_F32);
                be_check(q, "dk", dkb, dk, nk, TOL_F32);
                be_check(q, "dv", dvb, dv, nk, TOL_F32);
            }
            run_attn(q, a, Q, K, V, dO, false, ob, NULL, NULL, NULL, NULL);
            be_check(q, "out (lse absent)", ob, o, nq, TOL_F32);
        }
        if (nq <= 128) {
            attn_ctx c = {a, Qd, Kd, Vd, dOd};
            fd_check("attention dq", Qd, dq, nq, attn_loss, &c);
            fd_check("attention dk", Kd, dk, nk, attn_loss, &c);
            fd_check("attention dv", Vd, dv, nk, attn_loss, &c);
        }
        free(Q), free(K), free(V), free(dO), free(o), free(l), free(dq), free(dk), free(dv);
        free(ob), free(lb), free(dqb), free(dkb), free(dvb), free(Qd), free(Kd), free(Vd), free(dOd);
        free(ro), free(rl), free(rdq), free(rdk), free(rdv);
    }
}

static void run_prefill(ops_queue *q, const float *Q, const float *K, const float *V, int n, int p0, int nh, int nkv,
                        int hd, float *out) {
    size_t nq = (size_t)n * nh * hd, nk = (size_t)(p0 + n) * nkv * hd;
    ops_reserve(q, p0 + n, 0, 0, 0);
    ops_tensor tq = UPF(q, Q, nq), tk = UPF(q, K, nk), tv = UPF(q, V, nk), to = ops_alloc(q, OPS_F32, nq);
    op_attention_prefill(q, to, tq, tk, tv, n, p0, nh, nkv, hd);
    ops_download(q, out, to, nq);
    ops_free(q, tq), ops_free(q, tk), ops_free(q, tv), ops_free(q, to);
}

static void test_attention_prefill(void) {
    static const int shapes[][5] = {{1, 0, 2, 1, 8},    {5, 7, 4, 2, 24}, {70, 100, 2, 2, 16},
                                    {1, 40, 4, 1, 16}, {66, 0, 4, 4, 8}, {3, 2, 2, 1, 40}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int n = shapes[s][0], p0 = shapes[s][1], nh = shapes[s][2], nkv = shapes[s][3], hd = shapes[s][4];
        int group = nh / nkv, ldq = nh * hd, ldk = nkv * hd;
        CTXF("attention_prefill n=%d p0=%d nh=%d nkv=%d hd=%d", n, p0, nh, nkv, hd);
        size_t nq = (size_t)n * ldq, nk = (size_t)(p0 + n) * ldk;
        float *Q = randn(nq, 1), *K = randn(nk, 1), *V = randn(nk, 1), *o = fbuf(nq), *ob = fbuf(nq);
        double *Qd = to_d(Q, nq), *Kd = to_d(K, nk), *Vd = to_d(V, nk), *ro = dbuf(nq), *p = dbuf(p0 + n);
        for (int i = 0; i < n; i++)
            for (int h = 0; h < nh; h++)
                ref_attn_row(Qd + (size_t)i * ldq + (size_t)h * hd, Kd + (size_t)(h / group) * hd,
                             Vd + (size_t)(h / group) * hd, ldk, p0 + i + 1, hd, ro + (size_t)i * ldq + (size_t)h * hd, p);
        run_prefill(CPU, Q, K, V, n, p0, nh, nkv, hd, o);
        ref_check("out", o, ro, nq);
        for (int b = 0; b < NBQ; b++) {
            run_prefill(BQ[b], Q, K, V, n, p0, nh, nkv, hd, ob);
            be_check(BQ[b], "out", ob, o, nq, TOL_F32);
        }
        if (p0 == 0) { /* a fresh prefix is the packed forward of one sequence */
            attn_shape a = {1, {0, n}, nh, nkv, hd};
            run_attn(CPU, &a, Q, K, V, NULL, false, ob, NULL, NULL, NULL, NULL);
            cmp_ff("prefill (p0 = 0) vs attention_fwd", o, ob, nq, 1e-6, 1e-6);
        }
        free(Q), free(K), free(V), free(o), free(ob), free(Qd), free(Kd), free(Vd), free(ro), free(p);
    }
}

static void run_decode(ops_queue *q, const float *Q, const float *Kc, const float *Vc, int n_slots, int slot_len,
                       const int *slots, const int *ctx, int n, int nh, int nkv, int hd, float *out) {
    size_t nq = (size_t)n * nh * hd, nc = (size_t)n_slots * slot_len * nkv * hd;
    ops_reserve(q, slot_len, n, 0, 0);
    ops_tensor tq = UPF(q, Q, nq), tk = UPF(q, Kc, nc), tv = UPF(q, Vc, nc), to = ops_alloc(q, OPS_F32, nq);
    op_attention_decode(q, to, tq, tk, tv, slot_len, slots, ctx, n, nh, nkv, hd);
    ops_download(q, out, to, nq);
    ops_free(q, tq), ops_free(q, tk), ops_free(q, tv), ops_free(q, to);
}

static void test_attention_decode(void) {
    /* n rows, nh, nkv, hd, slot_len */
    static const int shapes[][5] = {{1, 2, 1, 16, 20}, {4, 4, 2, 24, 20}, {3, 4, 1, 8, 20},
                                    {5, 2, 2, 32, 150}, {2, 8, 2, 64, 9}, {6, 2, 1, 40, 70}};
    const int n_slots = 3;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int n = shapes[s][0], nh = shapes[s][1], nkv = shapes[s][2], hd = shapes[s][3], slot_len = shapes[s][4];
        int group = nh / nkv, ldq = nh * hd, ldk = nkv * hd;
        CTXF("attention_decode rows=%d nh=%d nkv=%d hd=%d slot_len=%d", n, nh, nkv, hd, slot_len);
        size_t nq = (size_t)n * ldq, nc = (size_t)n_slots * slot_len * ldk;
        float *Q = randn(nq, 1), *Kc = randn(nc, 1), *Vc = randn(nc, 1), *o = fbuf(nq), *ob = fbuf(nq);
        int slots[8], ctx[8];
        for (int r = 0; r < n; r++) {
            slots[r] = (int)rng_next_below(&R, n_slots);
            ctx[r] = r == 0 ? 1 : r == 1 ? slot_len : 1 + (int)rng_next_below(&R, (uint64_t)slot_len);
        }
        double *Qd = to_d(Q, nq), *Kd = to_d(Kc, nc), *Vd = to_d(Vc, nc), *ro = dbuf(nq), *p = dbuf(slot_len);
        for (int r = 0; r < n; r++)
            for (int h = 0; h < nh; h++) {
                size_t base = (size_t)slots[r] * slot_len * ldk + (size_t)(h / group) * hd;
                ref_attn_row(Qd + (size_t)r * ldq + (size_t)h * hd, Kd + base, Vd + base, ldk, ctx[r], hd,
                             ro + (size_t)r * ldq + (size_t)h * hd, p);
            }
        run_decode(CPU, Q, Kc, Vc, n_slots, slot_len, slots, ctx, n, nh, nkv, hd, o);
        ref_check("out", o, ro, nq);
        for (int b = 0; b < NBQ; b++) {
            run_decode(BQ[b], Q, Kc, Vc, n_slots, slot_len, slots, ctx, n, nh, nkv, hd, ob);
            be_check(BQ[b], "out", ob, o, nq, TOL_F32);
        }
        free(Q), free(Kc), free(Vc), free(o), free(ob), free(Qd), free(Kd), free(Vd), free(ro), free(p);
    }
}

static void test_kv_write(void) {
    const int n_slots = 3, slot_len = 10, width = 40, n = 5;
    const int slots[] = {2, 0, 2, 1, 0}, pos[] = {0, 9, 7, 3, 0};
    size_t nc = (size_t)n_slots * slot_len * width;
    float *cache = randn(nc, 1), *rows = randn((size_t)n * width, 1), *want = fdup(cache, nc), *got = fbuf(nc);
    for (int r = 0; r < n; r++)
        memcpy(want + ((size_t)slots[r] * slot_len + pos[r]) * width, rows + (size_t)r * width, sizeof(float) * width);
    CTXF("kv_write slots=3 slot_len=10 width=40 rows=5");
    for (int b = -1; b < NBQ; b++) {
        ops_queue *q = b < 0 ? CPU : BQ[b];
        ops_tensor tc = UPF(q, cache, nc), tr = UPF(q, rows, (size_t)n * width);
        op_kv_write(q, tc, tr, slot_len, slots, pos, n, width);
        ops_download(q, got, tc, nc);
        EXPECT(memcmp(got, want, sizeof(float) * nc) == 0, "kv_write on %s: cache differs from the expected one",
               q->name);
        ops_free(q, tc), ops_free(q, tr);
    }
    free(cache), free(rows), free(want), free(got);
}

/* ---------------- swiglu ---------------- */

static double sigm(double g) { return 1.0 / (1.0 + exp(-g)); }
static void ref_swiglu(double *h, const double *g, const double *u, size_t n) {
    for (size_t i = 0; i < n; i++) h[i] = g[i] * sigm(g[i]) * u[i];
}

static void run_swiglu(ops_queue *q, const float *g, const float *u, const float *dh, size_t n, float *h, float *dg,
                       float *du) {
    float *nan = fbuf(n);
    fill_f(nan, n, NAN);
    ops_tensor tg = UPF(q, g, n), tu = UPF(q, u, n), th = ops_alloc(q, OPS_F32, n), tdh = UPF(q, dh, n);
    ops_tensor tdg = UPF(q, nan, n), tdu = UPF(q, nan, n);
    op_swiglu_fwd(q, th, tg, tu, n);
    op_swiglu_bwd(q, tdg, tdu, tdh, tg, tu, n);
    ops_download(q, h, th, n);
    ops_download(q, dg, tdg, n);
    ops_download(q, du, tdu, n);
    ops_free(q, tg), ops_free(q, tu), ops_free(q, th), ops_free(q, tdh), ops_free(q, tdg), ops_free(q, tdu);
    free(nan);
}

typedef struct {
    double *g, *u, *dh;
    size_t n;
} swiglu_ctx;
static double swiglu_loss(void *p) {
    swiglu_ctx *c = p;
    double *h = dbuf(c->n);
    ref_swiglu(h, c->g, c->u, c->n);
    double l = dot_dd(h, c->dh, c->n);
    free(h);
    return l;
}

static void test_swiglu(void) {
    static const size_t sizes[] = {1, 24, 216, 5000, 3 * 72};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        size_t n = sizes[s];
        CTXF("swiglu n=%zu", n);
        float *g = randn(n, 3), *u = randn(n, 1), *dh = randn(n, 1);
        if (n > 100) g[3] = 20, g[7] = -20, g[11] = 60, g[13] = -60, g[17] = 0; /* sigmoid tails */
        float *h = fbuf(n), *dg = fbuf(n), *du = fbuf(n), *hb = fbuf(n), *dgb = fbuf(n), *dub = fbuf(n);
        double *gd = to_d(g, n), *ud = to_d(u, n), *dhd = to_d(dh, n), *rh = dbuf(n), *rdg = dbuf(n), *rdu = dbuf(n);
        ref_swiglu(rh, gd, ud, n);
        for (size_t i = 0; i < n; i++) {
            double sg = sigm(gd[i]);
            rdg[i] = dhd[i] * ud[i] * sg * (1 + gd[i] * (1 - sg));
            rdu[i] = dhd[i] * gd[i] * sg;
        }
        run_swiglu(CPU, g, u, dh, n, h, dg, du);
        ref_check("h", h, rh, n);
        ref_check("dgate", dg, rdg, n);
        ref_check("dup", du, rdu, n);
        for (int b = 0; b < NBQ; b++) {
            run_swiglu(BQ[b], g, u, dh, n, hb, dgb, dub);
            be_check(BQ[b], "h", hb, h, n, TOL_F32);
            be_check(BQ[b], "dgate", dgb, dg, n, TOL_F32);
            be_check(BQ[b], "dup", dub, du, n, TOL_F32);
        }
        if (n <= 24) {
            swiglu_ctx c = {gd, ud, dhd, n};
            fd_check("swiglu dgate", gd, dg, n, swiglu_loss, &c);
            fd_check("swiglu dup", ud, du, n, swiglu_loss, &c);
        }
        free(g), free(u), free(dh), free(h), free(dg), free(du), free(hb), free(dgb), free(dub);
        free(gd), free(ud), free(dhd), free(rh), free(rdg), free(rdu);
    }
}

/* ---------------- embedding ---------------- */

static void run_embed(ops_queue *q, const float *table, const float *dtable0, const int32_t *tok, const float *dout,
                      int V, int T, int dim, float *out, float *dtable) {
    size_t nt = (size_t)V * dim, no = (size_t)T * dim;
    ops_tensor tt = UPF(q, table, nt), tk = UPI(q, tok, T), to = ops_alloc(q, OPS_F32, no);
    ops_tensor td = UPF(q, dtable0, nt), tdo = UPF(q, dout, no);
    op_embedding_fwd(q, to, tt, tk, T, dim);
    op_embedding_bwd(q, td, tdo, tk, T, dim);
    ops_download(q, out, to, no);
    ops_download(q, dtable, td, nt);
    ops_free(q, tt), ops_free(q, tk), ops_free(q, to), ops_free(q, td), ops_free(q, tdo);
}

static void test_embedding(void) {
    static const int shapes[][3] = {{37, 13, 40}, {37, 1, 72}, {1000, 150, 24}, {5, 9, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int V = shapes[s][0], T = shapes[s][1], dim = shapes[s][2];
        CTXF("embedding V=%d T=%d dim=%d", V, T, dim);
        size_t nt = (size_t)V * dim, no = (size_t)T * dim;
        float *table = randn(nt, 1), *dt0 = randn(nt, 1), *dout = randn(no, 1);
        int32_t *tok = xmalloc(sizeof(int32_t) * T);
        for (int t = 0; t < T; t++) tok[t] = (int32_t)rng_next_below(&R, (uint64_t)S2D_MIN(V, 7)); /* repeats */
        tok[0] = V - 1;
        if (T > 2) tok[T - 1] = 0, tok[T - 2] = V - 1;
        float *out = fbuf(no), *dt = fbuf(nt), *ob = fbuf(no), *dtb = fbuf(nt);
        double *ro = dbuf(no), *rd = to_d(dt0, nt);
        for (int t = 0; t < T; t++)
            for (int c = 0; c < dim; c++) {
                ro[(size_t)t * dim + c] = table[(size_t)tok[t] * dim + c];
                rd[(size_t)tok[t] * dim + c] += dout[(size_t)t * dim + c];
            }
        run_embed(CPU, table, dt0, tok, dout, V, T, dim, out, dt);
        cmp_fd("out", out, ro, no, 0, 0);
        ref_check("dtable", dt, rd, nt);
        for (int b = 0; b < NBQ; b++) {
            run_embed(BQ[b], table, dt0, tok, dout, V, T, dim, ob, dtb);
            be_check(BQ[b], "out", ob, out, no, TOL_F32);
            be_check(BQ[b], "dtable", dtb, dt, nt, TOL_F32);
        }
        free(table), free(dt0), free(dout), free(tok), free(out), free(dt), free(ob), free(dtb), free(ro), free(rd);
    }
}

/* ---------------- vocabulary rows ---------------- */

static double ref_lse(const double *z, int V) {
    double mx = -INFINITY, s = 0;
    for (int v = 0; v < V; v++) mx = fmax(mx, z[v]);
    for (int v = 0; v < V; v++) s += exp(z[v] - mx);
    return mx + log(s);
}
/* Ids of z [V] sorted by value descending, ties by lower id. */
static const double *sort_key;
static int by_value_desc(const void *pa, const void *pb) {
    int a = *(const int *)pa, b = *(const int *)pb;
    if (sort_key[a] != sort_key[b]) return sort_key[a] > sort_key[b] ? -1 : 1;
    return (a > b) - (a < b);
}
static void ref_order(const double *z, int V, int *ids) {
    for (int v = 0; v < V; v++) ids[v] = v;
    sort_key = z;
    qsort(ids, (size_t)V, sizeof(int), by_value_desc);
}

/* KL(p_T ‖ pθ) of one row against full teacher log-probs; grad (optional) = scale (pθ − p_T). */
static double ref_fkl_full(const double *z, const float *tlogp, int V, double scale, double *grad) {
    double lse = ref_lse(z, V), kl = 0;
    for (int v = 0; v < V; v++) {
        double pt = exp((double)tlogp[v]), lp = z[v] - lse;
        if (pt > 0) kl += pt * (tlogp[v] - lp);
        if (grad) grad[v] = scale * (exp(lp) - pt);
    }
    return kl;
}
/* Top-k + tail bucket: KL = Σ_K p_T log(p_T / pθ) + m_T log(m_T / mθ), m = 1 − Σ_K p (m_T = 0 when k = V or
 * below 1e-6, as ops_vocab.c); grad = scale (pθ − p_T) on K, scale pθ (1 − m_T / mθ) off K. */
static double ref_fkl_topk(const double *z, const int32_t *ids, const float *tlogp, int k, int V, double scale,
                           double *grad) {
    double lse = ref_lse(z, V), kl = 0, mt = 1, mth = 0;
    char *inK = xcalloc((size_t)V, 1);
    for (int i = 0; i < k; i++) inK[ids[i]] = 1;
    for (int v = 0; v < V; v++)
        if (!inK[v]) mth += exp(z[v] - lse);
    for (int i = 0; i < k; i++) {
        double pt = exp((double)tlogp[i]);
        mt -= pt;
        kl += pt * (tlogp[i] - (z[ids[i]] - lse));
    }
    if (k == V || mt < 1e-6) mt = 0;
    if (mt > 0) kl += mt * log(mt / mth);
    if (grad) {
        for (int v = 0; v < V; v++) grad[v] = exp(z[v] - lse) * (inK[v] ? 1 : 1 - (mt > 0 ? mt / mth : 0));
        for (int i = 0; i < k; i++) grad[ids[i]] -= exp((double)tlogp[i]);
        for (int v = 0; v < V; v++) grad[v] *= scale;
    }
    free(inK);
    return kl;
}

typedef struct {
    int V, T, k, n_slots, split; /* teacher buffers hold n_slots + 1 rows: the last is never referenced */
    float *logits;               /* [T, V] */
    int32_t *target;             /* [T] */
    float *dlogp;                /* [T] */
    int32_t *row_slot;           /* [T] */
    float *full_logp;            /* [n_slots + 1, V] the teacher's log-probs */
    int32_t *topk_ids;           /* [n_slots + 1, k] */
    float *topk_logp;            /* [n_slots + 1, k] */
    float scale;
    float temp;                  /* ops_vocab_op.temperature (0 = untempered) */
} vcase;

/* Teacher data from teacher logits tl [n_slots + 1, V] (double reference: sort and log-softmax). */
static void vcase_teacher(vcase *c, const float *tl) {
    int V = c->V, k = c->k, ns = c->n_slots + 1;
    double *z = dbuf(V);
    int *ord = xmalloc(sizeof(int) * V);
    c->full_logp = fbuf((size_t)ns * V);
    c->topk_ids = xcalloc((size_t)ns * k, sizeof(int32_t));
    c->topk_logp = fbuf((size_t)ns * k);
    for (int s = 0; s < ns; s++) {
        for (int v = 0; v < V; v++) z[v] = tl[(size_t)s * V + v];
        double lse = ref_lse(z, V);
        for (int v = 0; v < V; v++) c->full_logp[(size_t)s * V + v] = (float)(z[v] - lse);
        ref_order(z, V, ord);
        for (int i = 0; i < k; i++) {
            c->topk_ids[(size_t)s * k + i] = ord[i];
            c->topk_logp[(size_t)s * k + i] = (float)(z[ord[i]] - lse);
        }
    }
    free(z), free(ord);
}

/* peaked: 1 = teacher mass ~1 on one id; 2 = the id outside a k = V − 1 top-k has ~e^-60 of the mass, so the
 * teacher's tail 1 − Σ_K p is float rounding (either sign): the op drops it (ops_vocab.c: below 1e-6). */
static vcase vcase_make(int V, int T, int k, int split, int peaked) {
    vcase c = {.V = V, .T = T, .k = k, .split = split};
    size_t n = (size_t)T * V;
    c.logits = randn(n, 2);
    /* ties in row 0 (the teacher-side top-k orders them by lower id) */
    c.logits[V - 1] = c.logits[2] = c.logits[V / 2] = 9.0f;
    c.logits[4] = c.logits[1] = c.logits[V - 3] = 6.0f;
    c.target = xmalloc(sizeof(int32_t) * T);
    c.dlogp = randn(T, 1);
    c.row_slot = xmalloc(sizeof(int32_t) * T);
    for (int t = 0; t < T; t++) c.target[t] = (int32_t)rng_next_below(&R, (uint64_t)V);
    c.target[T - 1] = -1; /* the last row of a sequence */
    if (T > 2) c.target[1] = -1, c.target[2] = V - 1;
    /* rows → teacher slots, permuted, with untaught rows */
    int ns = 0;
    for (int t = 0; t < T; t++) c.row_slot[t] = (t % 3 == 1) ? -1 : ns++;
    for (int t = 0; t + 2 < T; t += 3) { /* swap slots of rows t and t + 2 */
        if (c.row_slot[t + 2] < 0) continue;
        int32_t tmp = c.row_slot[t];
        c.row_slot[t] = c.row_slot[t + 2], c.row_slot[t + 2] = tmp;
    }
    c.n_slots = ns;
    c.scale = 1.0f / (float)ns;
    float *tl = randn((size_t)(ns + 1) * V, 2);
    if (peaked == 1)
        for (int s = 0; s <= ns; s++) tl[(size_t)s * V + (s * 7) % V] = 40.0f; /* teacher mass ~1 on one id */
    if (peaked == 2)
        for (int s = 0; s <= ns; s++) tl[(size_t)s * V + (s * 5) % V] = -60.0f; /* one id with no mass */
    vcase_teacher(&c, tl);
    free(tl);
    return c;
}
static void vcase_free(vcase *c) {
    free(c->logits), free(c->target), free(c->dlogp), free(c->row_slot);
    free(c->full_logp), free(c->topk_ids), free(c->topk_logp);
}

typedef struct {
    float *logits;   /* [T, V] after the op */
    float *logp;     /* [T] VOCAB_LOGP forward (from logp, or from chunk_logp when logp is absent) */
    double *row_kl;  /* [T] fkl */
    float *full;     /* [n_slots + 1, V] teacher full */
    int32_t *ids;    /* [n_slots + 1, k] teacher top-k */
    float *tlogp;    /* [n_slots + 1, k] */
} vout;
static vout vout_make(const vcase *c) {
    size_t ns = (size_t)c->n_slots + 1;
    return (vout){fbuf((size_t)c->T * c->V), fbuf(c->T), dbuf(c->T), fbuf(ns * c->V),
                  xcalloc(ns * c->k, sizeof(int32_t)), fbuf(ns * c->k)};
}
static void vout_free(vout *o) { free(o->logits), free(o->logp), free(o->row_kl), free(o->full), free(o->ids), free(o->tlogp); }

#define SENTINEL 12345.0

/* Runs the op over the rows in two chunks [0, split), [split, T). Teacher outputs and row_kl start as SENTINEL. */
static void run_vocab(ops_queue *q, const vcase *c, ops_vocab_kind kind, bool want_grad, bool with_logp, vout *o) {
    int V = c->V, T = c->T, k = c->k;
    size_t ns = (size_t)c->n_slots + 1;
    bool teacher = kind == VOCAB_TEACHER_FULL || kind == VOCAB_TEACHER_TOPK;
    float *sf = fbuf(ns * V > ns * k ? ns * V : ns * k);
    fill_f(sf, ns * V > ns * k ? ns * V : ns * k, (float)SENTINEL);
    int32_t *si = xmalloc(sizeof(int32_t) * ns * k);
    for (size_t i = 0; i < ns * k; i++) si[i] = -7;
    double *sd = dbuf(T);
    for (int t = 0; t < T; t++) sd[t] = SENTINEL;
    ops_tensor tl = UPF(q, c->logits, (size_t)T * V), tt = UPI(q, c->target, T), tdl = UPF(q, c->dlogp, T);
    ops_tensor tlp = UPF(q, sf, T), tcl = ops_alloc(q, OPS_F32, T), tcs = ops_alloc(q, OPS_F32, T);
    ops_tensor trs = UPI(q, c->row_slot, T), tkl = up(q, OPS_F64, sd, T);
    ops_tensor tfull = UPF(q, teacher ? sf : c->full_logp, ns * V), tids = UPI(q, teacher ? si : c->topk_ids, ns * k);
    ops_tensor ttlp = UPF(q, teacher ? sf : c->topk_logp, ns * k);
    ops_vocab_op op = {.kind = kind, .want_grad = want_grad, .V = V, .k = k, .scale = c->scale,
                       .temperature = c->temp, .target = tt,
                       .logp = with_logp ? tlp : ot_none(), .dlogp = tdl, .chunk_logp = tcl, .chunk_lse = tcs,
                       .row_slot = trs, .full_logp = tfull, .topk_ids = tids, .topk_logp = ttlp,
                       .row_kl = teacher ? ot_none() : tkl};
    for (int r0 = 0; r0 < T; r0 = r0 ? T : c->split) {
        int rows = r0 ? T - r0 : c->split;
        op_vocab_rows(q, &op, ot_at(tl, (size_t)r0 * V), r0, rows);
        if (kind == VOCAB_LOGP && !with_logp) ops_download(q, o->logp + r0, tcl, rows);
    }
    ops_download(q, o->logits, tl, (size_t)T * V);
    if (kind == VOCAB_LOGP && with_logp) ops_download(q, o->logp, tlp, T);
    ops_download(q, o->row_kl, tkl, T);
    ops_download(q, o->full, tfull, ns * V);
    ops_download(q, o->ids, tids, ns * k);
    ops_download(q, o->tlogp, ttlp, ns * k);
    ops_free(q, tl), ops_free(q, tt), ops_free(q, tdl), ops_free(q, tlp), ops_free(q, tcl), ops_free(q, tcs);
    ops_free(q, trs), ops_free(q, tkl), ops_free(q, tfull), ops_free(q, tids), ops_free(q, ttlp);
    free(sf), free(si), free(sd);
}

/* The reference of one kind: logits' gradient (want_grad), logp, row_kl, teacher outputs, like vout. */
static void ref_vocab(const vcase *c, ops_vocab_kind kind, const double *zall, double *grad, double *logp,
                      double *row_kl, double *full, int32_t *ids, double *tlogp) {
    int V = c->V, T = c->T, k = c->k;
    size_t ns = (size_t)c->n_slots + 1;
    int *ord = xmalloc(sizeof(int) * V);
    for (int t = 0; t < T; t++) row_kl[t] = SENTINEL;
    for (size_t i = 0; i < ns * V; i++) full[i] = SENTINEL;
    for (size_t i = 0; i < ns * k; i++) ids[i] = -7, tlogp[i] = SENTINEL;
    for (int t = 0; t < T; t++) {
        const double *z = zall + (size_t)t * V;
        double *g = grad + (size_t)t * V, lse = ref_lse(z, V);
        int slot = c->row_slot[t];
        for (int v = 0; v < V; v++) g[v] = 0;
        switch (kind) {
        case VOCAB_LOGP:
            logp[t] = c->target[t] >= 0 ? z[c->target[t]] - lse : 0;
            if (c->target[t] >= 0) {
                for (int v = 0; v < V; v++) g[v] = -c->dlogp[t] * exp(z[v] - lse);
                g[c->target[t]] += c->dlogp[t];
            }
            break;
        case VOCAB_FKL_FULL:
            if (slot >= 0) row_kl[t] = ref_fkl_full(z, c->full_logp + (size_t)slot * V, V, c->scale, g);
            break;
        case VOCAB_FKL_TOPK:
            if (slot >= 0)
                row_kl[t] = ref_fkl_topk(z, c->topk_ids + (size_t)slot * k, c->topk_logp + (size_t)slot * k, k, V,
                                         c->scale, g);
            break;
        case VOCAB_TEACHER_FULL:
            if (slot >= 0)
                for (int v = 0; v < V; v++) full[(size_t)slot * V + v] = z[v] - lse;
            break;
        case VOCAB_TEACHER_TOPK:
            if (slot >= 0) {
                ref_order(z, V, ord);
                for (int i = 0; i < k; i++) ids[(size_t)slot * k + i] = ord[i], tlogp[(size_t)slot * k + i] = z[ord[i]] - lse;
            }
            break;
        case VOCAB_RKL_FULL: /* CPU only, no backend to compare: tests/unit/test_losses.c (test_rkl) checks them */
        case VOCAB_RKL_TOPK: break;
        }
    }
    free(ord);
}

static const char *kind_name(ops_vocab_kind k) {
    static const char *n[] = {"LOGP", "FKL_FULL", "FKL_TOPK", "TEACHER_FULL", "TEACHER_TOPK"};
    return n[k];
}

typedef struct {
    const vcase *c;
    ops_vocab_kind kind;
    double *z;
} vocab_ctx;
/* The scalar whose gradient the op writes: Σ dlogp·logp (LOGP) or scale Σ_taught KL (fkl). */
static double vocab_loss(void *p) {
    vocab_ctx *x = p;
    const vcase *c = x->c;
    double l = 0, *zt = dbuf(c->V);
    for (int t = 0; t < c->T; t++) {
        const double *z = x->z + (size_t)t * c->V;
        if (c->temp != 0 && c->temp != 1) { /* the loss of the tempered logits z / T */
            for (int v = 0; v < c->V; v++) zt[v] = z[v] / c->temp;
            z = zt;
        }
        int slot = c->row_slot[t];
        if (x->kind == VOCAB_LOGP && c->target[t] >= 0) l += c->dlogp[t] * (z[c->target[t]] - ref_lse(z, c->V));
        if (x->kind == VOCAB_FKL_FULL && slot >= 0)
            l += c->scale * ref_fkl_full(z, c->full_logp + (size_t)slot * c->V, c->V, 1, NULL);
        if (x->kind == VOCAB_FKL_TOPK && slot >= 0)
            l += c->scale * ref_fkl_topk(z, c->topk_ids + (size_t)slot * c->k, c->topk_logp + (size_t)slot * c->k,
                                         c->k, c->V, 1, NULL);
    }
    free(zt);
    return l;
}

static void vocab_case_t(int V, int T, int k, int split, int peaked, float temp) {
    vcase c = vcase_make(V, T, k, split, peaked);
    c.temp = temp;
    const bool tempered = temp != 0 && temp != 1;
    size_t n = (size_t)T * V, ns = (size_t)c.n_slots + 1;
    double *z = to_d(c.logits, n), *grad = dbuf(n), *logp = dbuf(T), *kl = dbuf(T), *full = dbuf(ns * V);
    if (tempered) /* the reference sees the tempered logits (the op's float division); its gradient gets 1/T */
        for (size_t i = 0; i < n; i++) z[i] = (double)(c.logits[i] / temp);
    double *tlogp = dbuf(ns * k), *zl = to_d(c.logits, n);
    int32_t *ids = xcalloc(ns * k, sizeof(int32_t));
    vout o = vout_make(&c), ob = vout_make(&c);
    for (int kind = VOCAB_LOGP; kind <= VOCAB_TEACHER_TOPK; kind++) {
        bool teacher = kind >= VOCAB_TEACHER_FULL;
        ref_vocab(&c, kind, z, grad, logp, kl, full, ids, tlogp);
        if (tempered)
            for (size_t i = 0; i < n; i++) grad[i] /= temp;
        for (int mode = 0; mode < (kind == VOCAB_LOGP ? 3 : teacher ? 1 : 2); mode++) {
            bool want_grad = mode == 1, with_logp = mode != 2;
            CTXF("vocab %s V=%d T=%d k=%d chunks=%d+%d%s want_grad=%d%s temperature=%g", kind_name(kind), V, T, k,
                 split, T - split, peaked == 1 ? " peaked teacher" : peaked == 2 ? " tail at rounding" : "", want_grad,
                 kind == VOCAB_LOGP && !with_logp ? " logp absent" : "", (double)temp);
            run_vocab(CPU, &c, kind, want_grad, with_logp, &o);
            if (kind == VOCAB_LOGP && !want_grad) ref_check("logp", o.logp, logp, T);
            if (want_grad) ref_check("dlogits", o.logits, grad, n);
            if (!teacher && kind != VOCAB_LOGP) cmp_dd("row_kl (sentinel where untaught)", o.row_kl, kl, T, 1e-6, 1e-6);
            if (kind == VOCAB_TEACHER_FULL) ref_check("full_logp (sentinel in the unused slot)", o.full, full, ns * V);
            if (kind == VOCAB_TEACHER_TOPK) {
                expect_ints("topk_ids", o.ids, ids, ns * k);
                ref_check("topk_logp", o.tlogp, tlogp, ns * k);
            }
#if STRICT_CONTRACTS
            /* ops.h: logp is the VOCAB_LOGP forward output when present, with want_grad too */
            if (kind == VOCAB_LOGP && want_grad) ref_check("logp with want_grad", o.logp, logp, T);
#endif
            if (want_grad && kind != VOCAB_TEACHER_FULL && V * T <= 300 && kind <= VOCAB_FKL_TOPK) {
                vocab_ctx x = {&c, kind, zl};
                fd_check("d(loss)/d(logits)", zl, o.logits, n, vocab_loss, &x);
            }
            for (int b = 0; b < NBQ; b++) {
                ops_queue *q = BQ[b];
                run_vocab(q, &c, kind, want_grad, with_logp, &ob);
                if (kind == VOCAB_LOGP && !want_grad) be_check(q, "logp", ob.logp, o.logp, T, TOL_F32);
                if (want_grad) be_check(q, "dlogits", ob.logits, o.logits, n, TOL_F32);
                if (!teacher && kind != VOCAB_LOGP) be_check_d(q, "row_kl", ob.row_kl, o.row_kl, T);
                if (kind == VOCAB_TEACHER_FULL) be_check(q, "full_logp", ob.full, o.full, ns * V, TOL_F32);
                if (kind == VOCAB_TEACHER_TOPK) {
                    be_ints(q, "topk_ids", ob.ids, o.ids, ns * k);
                    be_check(q, "topk_logp", ob.tlogp, o.tlogp, ns * k, TOL_F32);
                }
                if (!want_grad && (kind == VOCAB_LOGP || teacher) && !tempered)
                    EXPECT(memcmp(ob.logits, c.logits, sizeof(float) * n) == 0,
                           "vocab [%s; %s] on %s: the logits changed without want_grad", CTX, MODE, q->name);
            }
        }
    }
    vout_free(&o), vout_free(&ob);
    free(z), free(grad), free(logp), free(kl), free(full), free(tlogp), free(zl), free(ids);
    vcase_free(&c);
}
static void vocab_case(int V, int T, int k, int split, int peaked) { vocab_case_t(V, T, k, split, peaked, 0); }

static void test_vocab_rows(void) {
    vocab_case(37, 6, 5, 2, 0);
    vocab_case(37, 6, 1, 4, 0);
    vocab_case(37, 6, 37, 1, 0);  /* k = V: no tail */
    vocab_case(37, 4, 1, 3, 1);   /* teacher mass ~1 in the top-1 */
    vocab_case(37, 12, 36, 5, 2); /* k = V − 1, the teacher's tail at rounding (dropped) */
    vocab_case(1000, 5, 20, 3, 0);
    vocab_case(1000, 1, 1, 1, 0); /* T = 1 (its only row is a last row: target −1) */
    vocab_case(1000, 4, 1000, 2, 0);
    vocab_case(16, 3, 4, 1, 0);
    /* at a sampling temperature: every kind on logits / T, gradients by the chain rule (finite differences) */
    vocab_case_t(37, 6, 5, 2, 0, 0.7f);
    vocab_case_t(37, 4, 1, 3, 1, 0.7f);
    vocab_case_t(1000, 5, 20, 3, 0, 1.3f);
    /* temperature 1 is the untempered op bit for bit */
    {
        vcase c = vcase_make(37, 6, 5, 2, 0);
        vout a = vout_make(&c), b = vout_make(&c);
        for (int kind = VOCAB_LOGP; kind <= VOCAB_FKL_TOPK; kind++) {
            c.temp = 0;
            run_vocab(CPU, &c, kind, true, true, &a);
            c.temp = 1;
            run_vocab(CPU, &c, kind, true, true, &b);
            EXPECT(memcmp(a.logits, b.logits, sizeof(float) * 37 * 6) == 0 && memcmp(a.logp, b.logp, sizeof(float) * 6) == 0,
                   "vocab %s: temperature 1 differs from the untempered op", kind_name(kind));
        }
        vout_free(&a), vout_free(&b), vcase_free(&c);
    }
}

/* ---------------- add, scale, sumsq ---------------- */

static void test_elementwise(void) {
    static const size_t sizes[] = {1, 37, 40000};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        size_t n = sizes[s];
        float *x = randn(n, 1), *y = randn(n, 1), *got = fbuf(n), *cpu_add = fbuf(n), *cpu_sc = fbuf(n);
        double *ra = dbuf(n), *rs = dbuf(n);
        const float sc = -0.37f;
        for (size_t i = 0; i < n; i++) ra[i] = (float)((double)y[i] + x[i]), rs[i] = (float)((double)y[i] * sc);
        double rq = 0;
        for (size_t i = 0; i < n; i++) rq += (double)x[i] * x[i];
        for (int b = -1; b < NBQ; b++) {
            ops_queue *q = b < 0 ? CPU : BQ[b];
            CTXF("add/scale/sumsq n=%zu", n);
            ops_tensor tx = UPF(q, x, n), ty = UPF(q, y, n);
            op_add(q, ty, tx, n);
            ops_download(q, got, ty, n);
            if (b < 0) cmp_fd("add (exact)", got, ra, n, 0, 0), memcpy(cpu_add, got, sizeof(float) * n);
            else be_check(q, "add", got, cpu_add, n, TOL_F32);
            ops_upload(q, ty, y, n);
            op_scale(q, ty, sc, n);
            ops_download(q, got, ty, n);
            if (b < 0) cmp_fd("scale (exact)", got, rs, n, 0, 0), memcpy(cpu_sc, got, sizeof(float) * n);
            else be_check(q, "scale", got, cpu_sc, n, TOL_F32);
            double ss = op_sumsq(q, tx, n);
            cmp_dd("sumsq", &ss, &rq, 1, 0, 1e-12);
            ops_free(q, tx), ops_free(q, ty);
        }
        free(x), free(y), free(got), free(cpu_add), free(cpu_sc), free(ra), free(rs);
    }
}

/* ---------------- adamw ---------------- */

typedef struct {
    long step;
    float lr;
} adam_sched;

static void run_adamw(ops_queue *q, const float *p0, float *const *grads, const adam_sched *st, int n_steps, size_t n,
                      const ops_segment *segs, int n_segs, float *p, float *m, float *v) {
    float *zero = fbuf(n);
    ops_tensor tp = UPF(q, p0, n), tg = ops_alloc(q, OPS_F32, n), tm = UPF(q, zero, n), tv = UPF(q, zero, n);
    for (int s = 0; s < n_steps; s++) {
        ops_upload(q, tg, grads[s], n);
        ops_adamw_step a = {st[s].step, st[s].lr, 0.9f, 0.999f, 1e-8f, 0.1f};
        op_adamw(q, tp, tg, tm, tv, segs, n_segs, &a);
    }
    ops_download(q, p, tp, n);
    ops_download(q, m, tm, n);
    ops_download(q, v, tv, n);
    ops_free(q, tp), ops_free(q, tg), ops_free(q, tm), ops_free(q, tv);
    free(zero);
}

static void test_adamw(void) {
    const size_t n = 1000;
    const ops_segment segs[] = {{0, 100, true}, {100, 0, false}, {100, 237, false}, {337, 1, true}, {338, 662, true}};
    const int n_segs = 5;
    const adam_sched st[] = {{1, 1e-3f}, {2, 2e-3f}, {3, 5e-4f}, {1000, 1e-2f}};
    const int n_steps = 4;
    float *p0 = randn(n, 1), *grads[4];
    for (int s = 0; s < n_steps; s++) {
        grads[s] = randn(n, s == 2 ? 1e-3 : 1);
        grads[s][5] = 0, grads[s][200] = 1e-9f, grads[s][500] = -1e-9f; /* eps-dominated denominators */
    }
    /* torch.optim.AdamW in double */
    double *rp = to_d(p0, n), *rm = dbuf(n), *rv = dbuf(n);
    for (int s = 0; s < n_steps; s++) {
        double lr = st[s].lr, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.1f, t = (double)st[s].step;
        for (int g = 0; g < n_segs; g++)
            for (size_t i = segs[g].offset; i < segs[g].offset + segs[g].numel; i++) {
                double gr = grads[s][i];
                if (segs[g].decay) rp[i] *= 1 - lr * wd;
                rm[i] += (1 - b1) * (gr - rm[i]);
                rv[i] = b2 * rv[i] + (1 - b2) * gr * gr;
                rp[i] -= lr / (1 - pow(b1, t)) * rm[i] / (sqrt(rv[i]) / sqrt(1 - pow(b2, t)) + eps);
            }
    }
    float *p = fbuf(n), *m = fbuf(n), *v = fbuf(n), *pb = fbuf(n), *mb = fbuf(n), *vb = fbuf(n);
    CTXF("adamw n=%zu segments=%d steps={1,2,3,1000}", n, n_segs);
    run_adamw(CPU, p0, grads, st, n_steps, n, segs, n_segs, p, m, v);
    ref_check("params", p, rp, n);
    ref_check("m", m, rm, n);
    ref_check("v", v, rv, n);
    /* the update itself (p − p0) at 1e-4: catches a wrong step far below the params' size */
    double *rdp = dbuf(n), *gdp = dbuf(n);
    for (size_t i = 0; i < n; i++) rdp[i] = rp[i] - p0[i], gdp[i] = (double)p[i] - p0[i];
    cmp_dd("params − params0", gdp, rdp, n, 1e-4, 1e-3);
    /* the CPU's AVX2 loop is the plain loop's bits (the same operations, 8 lanes at a time; tails of 1-7) */
    cpu_adamw_force_plain(true);
    run_adamw(CPU, p0, grads, st, n_steps, n, segs, n_segs, pb, mb, vb);
    cpu_adamw_force_plain(false);
    EXPECT(memcmp(p, pb, sizeof(float) * n) == 0 && memcmp(m, mb, sizeof(float) * n) == 0 &&
               memcmp(v, vb, sizeof(float) * n) == 0,
           "adamw: AVX2 == plain loop bitwise");
    for (int b = 0; b < NBQ; b++) {
        run_adamw(BQ[b], p0, grads, st, n_steps, n, segs, n_segs, pb, mb, vb);
        be_check(BQ[b], "params", pb, p, n, TOL_F32);
        be_check(BQ[b], "m", mb, m, n, TOL_F32);
        be_check(BQ[b], "v", vb, v, n, TOL_F32);
    }
    free(p0), free(rp), free(rm), free(rv), free(p), free(m), free(v), free(pb), free(mb), free(vb), free(rdp), free(gdp);
    for (int s = 0; s < n_steps; s++) free(grads[s]);
}

/* ---------------- sampling ---------------- */

/* The behaviour distribution and the draw (ops/sampler.h): logits / T → softmax → top-k → renormalise → top-p →
 * draw u = sampler_uniform(seed, seq, pos) by inverse CDF: over ids in id order when no filter applies, over the
 * candidates best first when one does (as the CPU sampler). Greedy: argmax (lowest id), log-softmax of it. */
static int ref_sample(const float *zf, int V, const ops_sampling *sp, uint64_t seq, uint64_t pos, double *logp) {
    double *z = to_d(zf, V), lse = ref_lse(z, V);
    int id = -1;
    if (sp->temperature == 0) {
        id = 0;
        for (int v = 1; v < V; v++)
            if (z[v] > z[id]) id = v;
        *logp = z[id] - lse;
        free(z);
        return id;
    }
    double *w = dbuf(V), mx = -INFINITY, Z = 0;
    for (int v = 0; v < V; v++) mx = fmax(mx, (double)(zf[v] / sp->temperature));
    for (int v = 0; v < V; v++) Z += (w[v] = exp((double)(zf[v] / sp->temperature) - mx));
    int *ord = xmalloc(sizeof(int) * V);
    ref_order(z, V, ord);
    bool use_k = sp->top_k > 0 && sp->top_k < V, use_p = sp->top_p < 1;
    double u = sampler_uniform(sp->seed, seq, pos), total = 0, cum = 0;
    if (!use_k && !use_p) {
        total = Z;
        for (int v = 0; v < V; v++) {
            cum += w[v], id = v;
            if (cum > u * total) break;
        }
    } else {
        int nc = use_k ? sp->top_k : V;
        double mass = 0;
        for (int i = 0; i < nc; i++) mass += w[ord[i]];
        if (use_p) {
            double c2 = 0;
            for (int i = 0; i < nc; i++)
                if ((c2 += w[ord[i]]) >= sp->top_p * mass) {
                    nc = i + 1;
                    break;
                }
        }
        for (int i = 0; i < nc; i++) total += w[ord[i]];
        for (int i = 0; i < nc; i++) {
            cum += w[ord[i]], id = ord[i];
            if (cum > u * total) break;
        }
    }
    *logp = log(w[id] / total);
    free(z), free(w), free(ord);
    return id;
}

static void run_sample(ops_queue *q, const float *L, int n, int V, const ops_sampling *sp, const uint64_t *seq,
                       const uint64_t *pos, int32_t *ids, float *logp) {
    ops_reserve(q, 0, n, V, 0);
    ops_tensor tl = UPF(q, L, (size_t)n * V);
    op_sample(q, tl, n, V, sp, seq, pos, ids, logp);
    ops_free(q, tl);
}

static void test_sample(void) {
    static const int shapes[][2] = {{37, 6}, {1000, 4}, {16, 1}, {16, 2}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int V = shapes[s][0], n = shapes[s][1];
        float *L = randn((size_t)n * V, 2);
        if (n > 1) L[V + 3] = L[V + 9] = L[V + 20 % V] = 12.0f; /* row 1: a three-way tie at the top */
        if (s == 3) fill_f(L, (size_t)V, 0.5f); /* row 0 flat: top-p 0.5 keeps exactly half, top-k 3 ids 0..2 */
        uint64_t seq[8], pos[8], seq_r[8], pos_r[8];
        for (int i = 0; i < n; i++) seq[i] = 11 + (uint64_t)i * 5, pos[i] = 100 + (uint64_t)i * 3;
        const ops_sampling params[] = {
            {0, 0, 1, 7},     {1, 0, 1, 7},   {0.7f, 0, 1, 8},    {1, 1, 1, 9},     {1, 5, 1, 10},
            {1, V, 1, 11},    {1, 0, 0.9f, 12}, {1, 0, 1e-6f, 13}, {0.8f, 10, 0.5f, 14}, {1.3f, 0, 0.95f, 15},
            {2.5f, V - 1, 0.99f, 16}, {1, 0, 0.5f, 17}, {1, 3, 1, 18}, {1, 3, 0.5f, 19},
        };
        int32_t ids[8], idsb[8], ref_ids[8];
        float lp[8], lpb[8];
        double ref_lp[8];
        float *Lr = fbuf((size_t)n * V);
        for (int i = 0; i < n; i++) { /* the rows reversed, each keeping its (seq, pos) */
            memcpy(Lr + (size_t)i * V, L + (size_t)(n - 1 - i) * V, sizeof(float) * V);
            seq_r[i] = seq[n - 1 - i], pos_r[i] = pos[n - 1 - i];
        }
        for (size_t c = 0; c < sizeof params / sizeof *params; c++) {
            const ops_sampling *sp = &params[c];
            CTXF("sample V=%d rows=%d temperature=%g top_k=%d top_p=%g", V, n, sp->temperature, sp->top_k, sp->top_p);
            for (int i = 0; i < n; i++) ref_ids[i] = ref_sample(L + (size_t)i * V, V, sp, seq[i], pos[i], &ref_lp[i]);
            run_sample(CPU, L, n, V, sp, seq, pos, ids, lp);
            expect_ints("ids", ids, ref_ids, n);
            ref_check("behaviour logp", lp, ref_lp, n);
            for (int b = -1; b < NBQ; b++) {
                ops_queue *q = b < 0 ? CPU : BQ[b];
                if (b >= 0) {
                    run_sample(q, L, n, V, sp, seq, pos, idsb, lpb);
                    be_ints(q, "ids", idsb, ids, n);
                    be_check(q, "logp", lpb, lp, n, TOL_F32);
                }
                /* rows are independent: reversed rows give the reversed results */
                run_sample(q, Lr, n, V, sp, seq_r, pos_r, idsb, lpb);
                bool same = true;
                for (int i = 0; i < n; i++) same = same && idsb[i] == ids[n - 1 - i] && lpb[i] == lp[n - 1 - i];
                EXPECT(same, "sample [%s; %s] on %s: reordering the rows changed a row's sample", CTX, MODE, q->name);
            }
        }
        free(L), free(Lr);
    }
}

/* ---------------- bf16 mirror ---------------- */

static void test_bf16_mirror(void) {
    static const size_t sizes[] = {1, 37, 40000};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        size_t n = sizes[s];
        CTXF("bf16_mirror n=%zu", n);
        float *src = randn(n, 1);
        f32_round_to_bf16(src, n); /* bf16-exact */
        uint16_t *want = xmalloc(sizeof(uint16_t) * n), *got = xmalloc(sizeof(uint16_t) * n);
        uint16_t *stale = xmalloc(sizeof(uint16_t) * n);
        for (size_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, &src[i], 4);
            want[i] = (uint16_t)(u >> 16);
        }
        memcpy(stale, want, sizeof(uint16_t) * n);
        stale[n / 2] ^= 0x55, stale[n - 1] ^= 1;
        for (int b = -1; b < NBQ; b++) {
            ops_queue *q = b < 0 ? CPU : BQ[b];
            ops_tensor ts = UPF(q, src, n), td = ops_alloc(q, OPS_BF16, n);
            bool ok = op_bf16_mirror(q, td, ts, n, true);
            /* a backend may decline (false); the CPU backend mirrors exact weights */
            if (same_backend(q)) EXPECT(ok, "bf16_mirror [%s] on %s: declined bf16-exact weights", CTX, q->name);
            if (ok) {
                ops_download(q, got, td, n);
                EXPECT(memcmp(got, want, 2 * n) == 0, "bf16_mirror [%s] on %s: fresh mirror bits", CTX, q->name);
                ops_upload(q, td, stale, n); /* a stale mirror is brought up to date */
                ok = op_bf16_mirror(q, td, ts, n, false);
                ops_download(q, got, td, n);
                EXPECT(ok && memcmp(got, want, 2 * n) == 0, "bf16_mirror [%s] on %s: refresh of a stale mirror", CTX,
                       q->name);
                ok = op_bf16_mirror(q, td, ts, n, false); /* already current */
                ops_download(q, got, td, n);
                EXPECT(ok && memcmp(got, want, 2 * n) == 0, "bf16_mirror [%s] on %s: refresh of a current mirror", CTX,
                       q->name);
            }
            float *bad = fdup(src, n);
            uint32_t u;
            memcpy(&u, &bad[n - 1], 4);
            u |= 1; /* one word that bf16 cannot hold */
            memcpy(&bad[n - 1], &u, 4);
            ops_upload(q, ts, bad, n);
            EXPECT(!op_bf16_mirror(q, td, ts, n, true) && !op_bf16_mirror(q, td, ts, n, false),
                   "bf16_mirror [%s] on %s: accepted weights that are not bf16-exact", CTX, q->name);
            ops_free(q, ts), ops_free(q, td);
            free(bad);
        }
        free(src), free(want), free(got), free(stale);
    }
}

/* ---------------- determinism across thread counts (ops.h: the CPU backend's reductions) ---------------- */

static void det_ops(float *out, size_t *n_out) {
    /* Sizes past the kernels' parallel thresholds. */
    rng_stream keep = R;
    rng_stream_init(&R, 99, 1);
    size_t o = 0;
    {
        attn_shape a = {2, {0, 150, 230}, 4, 2, 16};
        int T = attn_T(&a);
        size_t nq = (size_t)T * 64, nk = (size_t)T * 32;
        float *Q = randn(nq, 1), *K = randn(nk, 1), *V = randn(nk, 1), *dO = randn(nq, 1);
        float *l = fbuf((size_t)T * 4);
        run_attn(CPU, &a, Q, K, V, dO, true, out + o, l, out + o + nq, out + o + 2 * nq, out + o + 2 * nq + nk);
        o += 2 * nq + 2 * nk;
        free(Q), free(K), free(V), free(dO), free(l);
    }
    {
        int rows = 300, dim = 128;
        size_t n = (size_t)rows * dim;
        float *x = randn(n, 1), *w = randn(dim, 1), *dy = randn(n, 1), *z = fbuf(n), *r = fbuf(rows);
        run_rms(CPU, x, w, dy, z, z, rows, dim, 1e-6f, true, 0, out + o, r, out + o + n, out + o + 2 * n);
        o += 2 * n + dim;
        free(x), free(w), free(dy), free(z), free(r);
    }
    {
        int T = 64, in = 72, outd = 300;
        float *x = randn((size_t)T * in, 1), *W = randn((size_t)outd * in, 1), *y0 = fbuf((size_t)T * outd);
        run_rows(CPU, x, W, false, y0, T, in, outd, false, out + o);
        o += (size_t)T * outd;
        free(x), free(W), free(y0);
    }
    {
        int V = 50, T = 600, dim = 64;
        float *table = randn((size_t)V * dim, 1), *dt0 = fbuf((size_t)V * dim), *dout = randn((size_t)T * dim, 1);
        int32_t *tok = xmalloc(sizeof(int32_t) * T);
        for (int t = 0; t < T; t++) tok[t] = (int32_t)rng_next_below(&R, 5);
        float *e = fbuf((size_t)T * dim);
        run_embed(CPU, table, dt0, tok, dout, V, T, dim, e, out + o);
        o += (size_t)V * dim;
        free(table), free(dt0), free(dout), free(tok), free(e);
    }
    {
        size_t n = 70000;
        float *x = randn(n, 1);
        ops_tensor t = UPF(CPU, x, n);
        double ss = op_sumsq(CPU, t, n);
        memcpy(out + o, &ss, sizeof ss);
        o += 2;
        ops_free(CPU, t);
        free(x);
    }
    *n_out = o;
    R = keep;
}

static void test_thread_determinism(void) {
    int nt = omp_get_max_threads();
    if (nt < 2) return;
    const size_t cap = 400000;
    float *a = fbuf(cap), *b = fbuf(cap);
    size_t na, nb;
    det_ops(a, &na);
    omp_set_num_threads(1);
    det_ops(b, &nb);
    omp_set_num_threads(nt);
    CHECK(na <= cap, "det_ops: %zu floats", na);
    CTXF("attention fwd/bwd, rmsnorm fwd/bwd, linear_rows, embedding_bwd, sumsq at 1 and %d threads", nt);
    EXPECT(na == nb && memcmp(a, b, sizeof(float) * na) == 0, "[%s; %s]: results depend on the thread count", CTX,
           MODE);
    free(a), free(b);
}

/* ---------------- main ---------------- */

int main(void) {
    double t0 = now_s();
    CPU = ops_cpu();
    int nb;
    const ops_backend *const *list = ops_backends(&nb);
    EXPECT(nb >= 1 && list[0] == CPU->be, "ops_backends: the CPU backend comes first");
    for (int b = 0; b < nb && NBQ < 8; b++) {
        int devs = ops_backend_devices(list[b]);
        char desc[256];
        for (int d = 0; d < devs; d++) {
            ops_backend_describe(list[b], d, desc, sizeof desc);
            fprintf(stderr, "backend %s:%d: %s\n", ops_backend_name(list[b]), d, desc);
        }
        if (devs <= 0) continue;
        s2d_err err;
        ops_queue *q;
        bool ok = ops_open(ops_backend_name(list[b]), &q, &err);
        EXPECT(ok, "ops_open(%s): %s", ops_backend_name(list[b]), err.msg);
        if (ok) BQ[NBQ++] = q;
    }
    bool avx = ops_avx512_active();
    for (int pass = avx ? 0 : 1; pass < 2; pass++) {
        ops_set_portable(pass == 1);
        MODE = pass == 0 ? "avx512" : "portable";
        fprintf(stderr, "code path: %s\n", MODE);
        rng_stream_init(&R, 20261201, 0);
        RUN_TEST(test_buffers);
        RUN_TEST(test_matmul);
        RUN_TEST(test_linear);
        RUN_TEST(test_linear_rows);
        RUN_TEST(test_rmsnorm);
        RUN_TEST(test_rope);
        RUN_TEST(test_attention);
        RUN_TEST(test_attention_prefill);
        RUN_TEST(test_attention_decode);
        RUN_TEST(test_kv_write);
        RUN_TEST(test_swiglu);
        RUN_TEST(test_embedding);
        RUN_TEST(test_vocab_rows);
        RUN_TEST(test_elementwise);
        RUN_TEST(test_adamw);
        RUN_TEST(test_sample);
        RUN_TEST(test_bf16_mirror);
        RUN_TEST(test_thread_determinism);
    }
    ops_set_portable(false);
    for (int b = 0; b < NBQ; b++) ops_close(BQ[b]);
    fprintf(stderr, "%d backend queue(s), %.2f s\n", NBQ, now_s() - t0);
    return TEST_SUMMARY();
}
