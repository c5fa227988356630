/* cuda_selftest: the CUDA backend's ops against naive fp64 references and the CPU's own loss / sampler code,
 * through the backend table directly (no registry, no CPU backend needed). It runs only where a GPU is
 * visible (tests/gpu/run.sh); without one it says so and exits 77. Prints "RESULT cuda_selftest P F".
 * Checks: values within tolerance of the reference; bitwise properties the backend promises (row-invariant
 * linear_rows, bf16 W == f32 W of the same values, AdamW equal to the CPU formula, deterministic reruns). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/ops_cpu.h"
#include "core/common.h"
#include "core/rng.h"
#include "ops/sampler.h"
#include "ops/ops.h"

extern const ops_backend ops_cuda_backend;
static const ops_backend *be = &ops_cuda_backend;
static ops_queue Q;
static int passed, failed;

/* ops.c owns these; weak so that a binary that also links ops.c keeps its definitions. */
__attribute__((weak)) size_t ops_dtype_bytes(ops_dtype dt) { return dt == OPS_BF16 ? 2 : dt == OPS_F64 ? 8 : 4; }
__attribute__((weak)) const char *ops_dtype_name(ops_dtype dt) {
    static const char *n[] = {"f32", "bf16", "i32", "f64"};
    return (unsigned)dt < 4 ? n[dt] : "?";
}

static void check(const char *name, bool ok, const char *fmt, double v) {
    if (ok) passed++;
    else failed++;
    printf("%-4s %-40s ", ok ? "ok" : "FAIL", name);
    printf(fmt, v);
    printf("\n");
}

static rng_stream R;
static float frand(void) { return (float)(2 * rng_next_double(&R) - 1); }
static void fill(float *x, size_t n, float s) { for (size_t i = 0; i < n; i++) x[i] = s * frand(); }

static ops_tensor dput(const void *h, size_t n, ops_dtype dt) {
    ops_tensor t = {be->alloc(&Q, n * ops_dtype_bytes(dt)), dt};
    if (h) be->upload(&Q, t.p, h, n * ops_dtype_bytes(dt));
    return t;
}
static ops_tensor dputf(const float *h, size_t n) { return dput(h, n, OPS_F32); }
static void dget(void *h, ops_tensor t, size_t n) { be->download(&Q, h, t.p, n * ops_dtype_bytes(t.dt)); }
static void dfree(ops_tensor t) { be->free(&Q, t.p); }

/* max over i of |a - b| / (atol + rtol |b|): <= 1 passes */
static double err_ratio(const float *a, const double *b, size_t n, double atol, double rtol) {
    double w = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]) / (atol + rtol * fabs(b[i]));
        if (!(e <= w)) w = isnan(e) ? INFINITY : e;
    }
    return w;
}
static uint16_t to_bf16(float f) { /* round to nearest even, as __float2bfloat16_rn */
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_matmul(void) {
    const int M = 37, N = 53, K = 71;
    float *A = xmalloc(sizeof(float) * M * K), *B = xmalloc(sizeof(float) * K * N), *C = xmalloc(sizeof(float) * M * N);
    double *ref = xmalloc(sizeof(double) * M * N);
    fill(A, (size_t)M * K, 1), fill(B, (size_t)K * N, 1);
    ops_tensor dA = dputf(A, (size_t)M * K), dB = dputf(B, (size_t)K * N), dC = dputf(NULL, (size_t)M * N);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int acc = 0; acc < 2; acc++) {
                for (int i = 0; i < M * N; i++) C[i] = 0.5f;
                be->upload(&Q, dC.p, C, sizeof(float) * M * N);
                be->matmul(&Q, dC, dA, dB, M, N, K, ta, tb, acc);
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        double s = acc ? 0.5 : 0;
                        for (int k = 0; k < K; k++)
                            s += (double)(ta ? A[k * M + i] : A[i * K + k]) * (tb ? B[j * K + k] : B[k * N + j]);
                        ref[i * N + j] = s;
                    }
                dget(C, dC, (size_t)M * N);
                char name[64];
                snprintf(name, sizeof name, "matmul f32 ta=%d tb=%d acc=%d", ta, tb, acc);
                double e = err_ratio(C, ref, (size_t)M * N, 1e-5, 1e-5);
                check(name, e <= 1, "err %.3g", e);
            }
    /* bf16 B: A is rounded to bf16 too; the reference uses the rounded values */
    uint16_t *B16 = xmalloc(sizeof(uint16_t) * K * N);
    for (int i = 0; i < K * N; i++) B16[i] = to_bf16(B[i]);
    ops_tensor dB16 = dput(B16, (size_t)K * N, OPS_BF16);
    be->matmul(&Q, dC, dA, dB16, M, N, K, false, false, false);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++) s += (double)from_bf16(to_bf16(A[i * K + k])) * from_bf16(B16[k * N + j]);
            ref[i * N + j] = s;
        }
    dget(C, dC, (size_t)M * N);
    double e = err_ratio(C, ref, (size_t)M * N, 1e-4, 1e-4);
    check("matmul bf16 B (fp32 accumulation)", e <= 1, "err %.3g", e);
    dfree(dA), dfree(dB), dfree(dC), dfree(dB16);
    free(A), free(B), free(C), free(ref), free(B16);
}

static void test_linear_rows(void) {
    const int T = 13, in = 300, out = 77;
    float *x = xmalloc(sizeof(float) * T * in), *W = xmalloc(sizeof(float) * out * in);
    float *y = xmalloc(sizeof(float) * T * out), *y1 = xmalloc(sizeof(float) * out), *y16 = xmalloc(sizeof(float) * T * out);
    double *ref = xmalloc(sizeof(double) * T * out);
    uint16_t *W16 = xmalloc(sizeof(uint16_t) * out * in);
    fill(x, (size_t)T * in, 1);
    for (int i = 0; i < out * in; i++) { /* bf16-exact weights: the f32 and bf16 paths must agree bitwise */
        W16[i] = to_bf16(frand());
        W[i] = from_bf16(W16[i]);
    }
    ops_tensor dx = dputf(x, (size_t)T * in), dW = dputf(W, (size_t)out * in), dW16 = dput(W16, (size_t)out * in, OPS_BF16);
    ops_tensor dy = dputf(NULL, (size_t)T * out);
    be->linear_rows(&Q, dy, dx, dW, T, in, out, false);
    dget(y, dy, (size_t)T * out);
    for (int t = 0; t < T; t++)
        for (int o = 0; o < out; o++) {
            double s = 0;
            for (int k = 0; k < in; k++) s += (double)x[t * in + k] * W[o * in + k];
            ref[t * out + o] = s;
        }
    double e = err_ratio(y, ref, (size_t)T * out, 1e-5, 1e-5);
    check("linear_rows f32", e <= 1, "err %.3g", e);
    be->linear_rows(&Q, dy, dx, dW16, T, in, out, false);
    dget(y16, dy, (size_t)T * out);
    check("linear_rows bf16 W == f32 W bitwise", memcmp(y, y16, sizeof(float) * T * out) == 0, "%g", 0);
    bool inv = true;
    for (int t = 0; t < T; t++) { /* each row alone gives the bits it got in the batch */
        be->linear_rows(&Q, dy, ot_at(dx, (size_t)t * in), dW, 1, in, out, false);
        dget(y1, dy, out);
        inv &= memcmp(y1, y + (size_t)t * out, sizeof(float) * out) == 0;
    }
    check("linear_rows row-invariant", inv, "%g", 0);
    dfree(dx), dfree(dW), dfree(dW16), dfree(dy);
    free(x), free(W), free(y), free(y1), free(y16), free(ref), free(W16);
}

static void test_rmsnorm_rope(void) {
    const int rows = 70, dim = 96;
    size_t n = (size_t)rows * dim;
    float *x = xmalloc(4 * n), *w = xmalloc(4 * dim), *y = xmalloc(4 * n), *dy = xmalloc(4 * n), *dx = xmalloc(4 * n);
    float *dw = xmalloc(4 * dim), *rs = xmalloc(4 * rows);
    double *ref = xmalloc(8 * n), *rdw = xmalloc(8 * dim);
    fill(x, n, 2), fill(w, dim, 1), fill(dy, n, 1);
    ops_tensor dX = dputf(x, n), dWt = dputf(w, dim), dY = dputf(NULL, n), dR = dputf(NULL, rows), dDY = dputf(dy, n);
    ops_tensor dDX = dputf(NULL, n), dDW = dputf(NULL, dim);
    be->zero(&Q, dDW.p, 4 * dim);
    be->rmsnorm_fwd(&Q, dY, dR, dX, dWt, rows, dim, 1e-6f);
    be->rmsnorm_bwd(&Q, dDX, dDW, dDY, dX, dWt, dR, rows, dim, false);
    dget(y, dY, n), dget(rs, dR, rows), dget(dx, dDX, n), dget(dw, dDW, dim);
    for (int c = 0; c < dim; c++) rdw[c] = 0;
    double *rdx = xmalloc(8 * n);
    for (int r = 0; r < rows; r++) {
        double ss = 0, dot = 0;
        for (int i = 0; i < dim; i++) ss += (double)x[r * dim + i] * x[r * dim + i];
        double s = 1 / sqrt(ss / dim + 1e-6);
        for (int i = 0; i < dim; i++) {
            ref[r * dim + i] = w[i] * x[r * dim + i] * s;
            dot += (double)w[i] * dy[r * dim + i] * x[r * dim + i];
            rdw[i] += (double)dy[r * dim + i] * x[r * dim + i] * s;
        }
        for (int i = 0; i < dim; i++) rdx[r * dim + i] = s * w[i] * dy[r * dim + i] - dot * s * s * s / dim * x[r * dim + i];
    }
    double e = err_ratio(y, ref, n, 1e-6, 1e-5);
    check("rmsnorm_fwd", e <= 1, "err %.3g", e);
    e = err_ratio(dx, rdx, n, 1e-6, 1e-4);
    check("rmsnorm_bwd dx", e <= 1, "err %.3g", e);
    e = err_ratio(dw, rdw, dim, 1e-5, 1e-4);
    check("rmsnorm_bwd dw", e <= 1, "err %.3g", e);
    /* RoPE: forward then inverse gives x back; forward matches the formula */
    const int T = 10, nh = 3, hd = 64, half = hd / 2, max_pos = 50;
    size_t m = (size_t)T * nh * hd;
    float *cs = xmalloc(4 * max_pos * half), *sn = xmalloc(4 * max_pos * half), *xr = xmalloc(4 * m), *xo = xmalloc(4 * m);
    int32_t pos[10];
    for (int p = 0; p < max_pos; p++)
        for (int i = 0; i < half; i++) {
            double a = p * pow(10000.0, -2.0 * i / hd);
            cs[p * half + i] = (float)cos(a), sn[p * half + i] = (float)sin(a);
        }
    for (int t = 0; t < T; t++) pos[t] = (t * 7) % max_pos;
    fill(xr, m, 1);
    ops_tensor dx2 = dputf(xr, m), dc = dputf(cs, (size_t)max_pos * half), ds = dputf(sn, (size_t)max_pos * half);
    ops_tensor dp = dput(pos, T, OPS_I32);
    be->rope(&Q, dx2, dp, dc, ds, T, nh, hd, false);
    dget(xo, dx2, m);
    double *rr = xmalloc(8 * m);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < nh; h++)
            for (int i = 0; i < half; i++) {
                size_t b = ((size_t)t * nh + h) * hd;
                double c = cs[pos[t] * half + i], s = sn[pos[t] * half + i];
                rr[b + i] = xr[b + i] * c - xr[b + i + half] * s;
                rr[b + i + half] = xr[b + i + half] * c + xr[b + i] * s;
            }
    e = err_ratio(xo, rr, m, 1e-6, 1e-5);
    check("rope fwd", e <= 1, "err %.3g", e);
    be->rope(&Q, dx2, dp, dc, ds, T, nh, hd, true);
    dget(xo, dx2, m);
    for (size_t i = 0; i < m; i++) rr[i] = xr[i];
    e = err_ratio(xo, rr, m, 1e-6, 1e-5);
    check("rope inverse(fwd(x)) == x", e <= 1, "err %.3g", e);
    dfree(dX), dfree(dWt), dfree(dY), dfree(dR), dfree(dDY), dfree(dDX), dfree(dDW), dfree(dx2), dfree(dc), dfree(ds), dfree(dp);
    free(x), free(w), free(y), free(dy), free(dx), free(dw), free(rs), free(ref), free(rdw), free(rdx), free(cs), free(sn);
    free(xr), free(xo), free(rr);
}

/* Naive causal attention of one sequence in fp64: out, lse, and with dout the gradients (accumulated). */
static void ref_attention(const float *q, const float *k, const float *v, const float *dout, int n, int p0, int nh,
                          int nkv, int hd, double *out, double *lse, double *dq, double *dk, double *dv) {
    int group = nh / nkv, nk = p0 + n;
    double scale = 1 / sqrt((double)hd);
    double *P = xmalloc(8 * (size_t)nk), *dP = xmalloc(8 * (size_t)nk);
    for (int h = 0; h < nh; h++) {
        int g = h / group;
        for (int i = 0; i < n; i++) {
            const float *qi = q + ((size_t)i * nh + h) * hd;
            int vis = p0 + i + 1;
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j < vis; j++) {
                double s = 0;
                for (int d = 0; d < hd; d++) s += (double)qi[d] * k[((size_t)j * nkv + g) * hd + d];
                P[j] = s * scale;
                mx = fmax(mx, P[j]);
            }
            for (int j = 0; j < vis; j++) sum += (P[j] = exp(P[j] - mx));
            for (int j = 0; j < vis; j++) P[j] /= sum;
            if (lse) lse[(size_t)i * nh + h] = mx + log(sum);
            double *o = out + ((size_t)i * nh + h) * hd;
            for (int d = 0; d < hd; d++) {
                double s = 0;
                for (int j = 0; j < vis; j++) s += P[j] * v[((size_t)j * nkv + g) * hd + d];
                o[d] = s;
            }
            if (!dout) continue;
            const float *doi = dout + ((size_t)i * nh + h) * hd;
            double D = 0;
            for (int j = 0; j < vis; j++) {
                double s = 0;
                for (int d = 0; d < hd; d++) s += (double)doi[d] * v[((size_t)j * nkv + g) * hd + d];
                dP[j] = s;
                D += P[j] * s;
            }
            for (int j = 0; j < vis; j++) {
                double dS = P[j] * (dP[j] - D);
                for (int d = 0; d < hd; d++) {
                    dq[((size_t)i * nh + h) * hd + d] += scale * dS * k[((size_t)j * nkv + g) * hd + d];
                    dk[((size_t)j * nkv + g) * hd + d] += scale * dS * qi[d];
                    dv[((size_t)j * nkv + g) * hd + d] += P[j] * doi[d];
                }
            }
        }
    }
    free(P), free(dP);
}

static void test_attention(int hd, int nh, int nkv) {
    const int n_seqs = 3, lens[3] = {37, 1, 70};
    int ss[4] = {0};
    for (int s = 0; s < n_seqs; s++) ss[s + 1] = ss[s] + lens[s];
    const int T = ss[n_seqs];
    size_t nq = (size_t)T * nh * hd, nk = (size_t)T * nkv * hd;
    float *q = xmalloc(4 * nq), *k = xmalloc(4 * nk), *v = xmalloc(4 * nk), *dout = xmalloc(4 * nq);
    float *o = xmalloc(4 * nq), *l = xmalloc(4 * (size_t)T * nh), *gq = xmalloc(4 * nq), *gk = xmalloc(4 * nk), *gv = xmalloc(4 * nk);
    double *ro = xcalloc(nq, 8), *rl = xcalloc((size_t)T * nh, 8), *rq = xcalloc(nq, 8), *rk = xcalloc(nk, 8), *rv = xcalloc(nk, 8);
    fill(q, nq, 1), fill(k, nk, 1), fill(v, nk, 1), fill(dout, nq, 1);
    for (int s = 0; s < n_seqs; s++) {
        size_t b = (size_t)ss[s];
        ref_attention(q + b * nh * hd, k + b * nkv * hd, v + b * nkv * hd, dout + b * nh * hd, lens[s], 0, nh, nkv, hd,
                      ro + b * nh * hd, rl + b * nh, rq + b * nh * hd, rk + b * nkv * hd, rv + b * nkv * hd);
    }
    ops_tensor dq = dputf(q, nq), dk = dputf(k, nk), dv = dputf(v, nk), ddo = dputf(dout, nq);
    ops_tensor dO = dputf(NULL, nq), dL = dputf(NULL, (size_t)T * nh), gQ = dputf(NULL, nq), gK = dputf(NULL, nk), gV = dputf(NULL, nk);
    be->attention_fwd(&Q, dO, dL, dq, dk, dv, n_seqs, ss, nh, nkv, hd);
    be->attention_bwd(&Q, gQ, gK, gV, ddo, dq, dk, dv, dO, dL, n_seqs, ss, nh, nkv, hd);
    dget(o, dO, nq), dget(l, dL, (size_t)T * nh), dget(gq, gQ, nq), dget(gk, gK, nk), dget(gv, gV, nk);
    char name[80];
    double e;
    snprintf(name, sizeof name, "attention_fwd out hd=%d nh=%d nkv=%d", hd, nh, nkv);
    e = err_ratio(o, ro, nq, 1e-5, 1e-4), check(name, e <= 1, "err %.3g", e);
    snprintf(name, sizeof name, "attention_fwd lse hd=%d", hd);
    e = err_ratio(l, rl, (size_t)T * nh, 1e-5, 1e-5), check(name, e <= 1, "err %.3g", e);
    snprintf(name, sizeof name, "attention_bwd dq hd=%d", hd);
    e = err_ratio(gq, rq, nq, 1e-4, 1e-3), check(name, e <= 1, "err %.3g", e);
    snprintf(name, sizeof name, "attention_bwd dk hd=%d", hd);
    e = err_ratio(gk, rk, nk, 1e-4, 1e-3), check(name, e <= 1, "err %.3g", e);
    snprintf(name, sizeof name, "attention_bwd dv hd=%d", hd);
    e = err_ratio(gv, rv, nk, 1e-4, 1e-3), check(name, e <= 1, "err %.3g", e);
    /* determinism: a rerun gives the same bits */
    float *gk2 = xmalloc(4 * nk);
    be->attention_bwd(&Q, gQ, gK, gV, ddo, dq, dk, dv, dO, dL, n_seqs, ss, nh, nkv, hd);
    dget(gk2, gK, nk);
    snprintf(name, sizeof name, "attention_bwd deterministic hd=%d", hd);
    check(name, memcmp(gk, gk2, 4 * nk) == 0, "%g", 0);
    /* prefill: the last sequence's rows 50.. against its first 50 as a cached prefix */
    {
        const int p0 = 50, n = lens[2] - p0;
        size_t b = (size_t)ss[2];
        double *rp = xcalloc((size_t)n * nh * hd, 8);
        ref_attention(q + (b + p0) * nh * hd, k + b * nkv * hd, v + b * nkv * hd, NULL, n, p0, nh, nkv, hd, rp, NULL, NULL,
                      NULL, NULL);
        be->attention_prefill(&Q, dO, ot_at(dq, (b + p0) * nh * hd), ot_at(dk, b * nkv * hd), ot_at(dv, b * nkv * hd), n, p0,
                              nh, nkv, hd);
        dget(o, dO, (size_t)n * nh * hd);
        snprintf(name, sizeof name, "attention_prefill hd=%d", hd);
        e = err_ratio(o, rp, (size_t)n * nh * hd, 1e-5, 1e-4), check(name, e <= 1, "err %.3g", e);
        free(rp);
    }
    /* decode: 3 rows in slots of a cache [4 slots, 80, nkv, hd] holding the sequences' keys */
    {
        const int slot_len = 80, n_slots = 4, rows = 3;
        int slots[3] = {2, 0, 3}, ctx[3] = {37, 1, 70}, pos[3];
        size_t width = (size_t)nkv * hd, csz = (size_t)n_slots * slot_len * width;
        ops_tensor kc = dputf(NULL, csz), vc = dputf(NULL, csz);
        be->zero(&Q, kc.p, 4 * csz), be->zero(&Q, vc.p, 4 * csz);
        for (int s = 0; s < n_seqs; s++) /* kv_write each row of sequence s into slot slots[s] */
            for (int i = 0; i < lens[s]; i++) {
                int sl = slots[s];
                pos[0] = i;
                be->kv_write(&Q, kc, ot_at(dk, (size_t)(ss[s] + i) * width), slot_len, &sl, pos, 1, (int)width);
                be->kv_write(&Q, vc, ot_at(dv, (size_t)(ss[s] + i) * width), slot_len, &sl, pos, 1, (int)width);
            }
        float *qd = xmalloc(4 * (size_t)rows * nh * hd);
        double *rd = xcalloc((size_t)rows * nh * hd, 8);
        for (int r = 0; r < rows; r++) { /* the last row of each sequence as the query */
            size_t qi = (size_t)(ss[r] + lens[r] - 1) * nh * hd;
            memcpy(qd + (size_t)r * nh * hd, q + qi, 4 * (size_t)nh * hd);
            ref_attention(qd + (size_t)r * nh * hd, k + (size_t)ss[r] * width, v + (size_t)ss[r] * width, NULL, 1, ctx[r] - 1,
                          nh, nkv, hd, rd + (size_t)r * nh * hd, NULL, NULL, NULL, NULL);
        }
        ops_tensor dqd = dputf(qd, (size_t)rows * nh * hd);
        be->attention_decode(&Q, dO, dqd, kc, vc, slot_len, slots, ctx, rows, nh, nkv, hd);
        dget(o, dO, (size_t)rows * nh * hd);
        snprintf(name, sizeof name, "kv_write + attention_decode hd=%d", hd);
        e = err_ratio(o, rd, (size_t)rows * nh * hd, 1e-5, 1e-4), check(name, e <= 1, "err %.3g", e);
        dfree(kc), dfree(vc), dfree(dqd);
        free(qd), free(rd);
    }
    dfree(dq), dfree(dk), dfree(dv), dfree(ddo), dfree(dO), dfree(dL), dfree(gQ), dfree(gK), dfree(gV);
    free(q), free(k), free(v), free(dout), free(o), free(l), free(gq), free(gk), free(gv), free(gk2);
    free(ro), free(rl), free(rq), free(rk), free(rv);
}

/* Long decode contexts (split in chunks and combined) against the reference, and row-invariance: a row alone
 * gives the bits it gets in the batch. */
static void test_decode_long(int hd, int nh, int nkv) {
    const int slot_len = 2100, n_slots = 4, rows = 4;
    int slots[4] = {3, 1, 0, 2}, ctx[4] = {1500, 1024, 2049, 5};
    const size_t width = (size_t)nkv * hd, csz = (size_t)n_slots * slot_len * width;
    float *kc = xmalloc(4 * csz), *vc = xmalloc(4 * csz), *q = xmalloc(4 * (size_t)rows * nh * hd);
    float *o = xmalloc(4 * (size_t)rows * nh * hd), *o1 = xmalloc(4 * (size_t)nh * hd);
    double *ref = xcalloc((size_t)rows * nh * hd, 8);
    fill(kc, csz, 1), fill(vc, csz, 1), fill(q, (size_t)rows * nh * hd, 1);
    for (int r = 0; r < rows; r++)
        ref_attention(q + (size_t)r * nh * hd, kc + (size_t)slots[r] * slot_len * width, vc + (size_t)slots[r] * slot_len * width,
                      NULL, 1, ctx[r] - 1, nh, nkv, hd, ref + (size_t)r * nh * hd, NULL, NULL, NULL, NULL);
    ops_tensor dk = dputf(kc, csz), dv = dputf(vc, csz), dq = dputf(q, (size_t)rows * nh * hd), dO = dputf(NULL, (size_t)rows * nh * hd);
    be->attention_decode(&Q, dO, dq, dk, dv, slot_len, slots, ctx, rows, nh, nkv, hd);
    dget(o, dO, (size_t)rows * nh * hd);
    char name[80];
    snprintf(name, sizeof name, "attention_decode long contexts hd=%d", hd);
    double e = err_ratio(o, ref, (size_t)rows * nh * hd, 1e-5, 1e-4);
    check(name, e <= 1, "err %.3g", e);
    bool inv = true;
    for (int r = 0; r < rows; r++) {
        be->attention_decode(&Q, dO, ot_at(dq, (size_t)r * nh * hd), dk, dv, slot_len, slots + r, ctx + r, 1, nh, nkv, hd);
        dget(o1, dO, (size_t)nh * hd);
        inv &= memcmp(o1, o + (size_t)r * nh * hd, 4 * (size_t)nh * hd) == 0;
    }
    snprintf(name, sizeof name, "attention_decode row-invariant hd=%d", hd);
    check(name, inv, "%g", 0);
    dfree(dk), dfree(dv), dfree(dq), dfree(dO);
    free(kc), free(vc), free(q), free(o), free(o1), free(ref);
}

static void test_elementwise(void) {
    const size_t n = 10007;
    float *g = xmalloc(4 * n), *u = xmalloc(4 * n), *dh = xmalloc(4 * n), *h = xmalloc(4 * n), *a = xmalloc(4 * n), *b = xmalloc(4 * n);
    double *r1 = xmalloc(8 * n), *r2 = xmalloc(8 * n), *r3 = xmalloc(8 * n);
    fill(g, n, 4), fill(u, n, 1), fill(dh, n, 1);
    ops_tensor dg = dputf(g, n), du = dputf(u, n), ddh = dputf(dh, n), dH = dputf(NULL, n), dA = dputf(NULL, n), dB = dputf(NULL, n);
    be->swiglu_fwd(&Q, dH, dg, du, n);
    be->swiglu_bwd(&Q, dA, dB, ddh, dg, du, n);
    dget(h, dH, n), dget(a, dA, n), dget(b, dB, n);
    for (size_t i = 0; i < n; i++) {
        double s = 1 / (1 + exp(-(double)g[i]));
        r1[i] = g[i] * s * u[i];
        r2[i] = dh[i] * u[i] * s * (1 + g[i] * (1 - s));
        r3[i] = dh[i] * g[i] * s;
    }
    double e = err_ratio(h, r1, n, 1e-6, 1e-5);
    check("swiglu_fwd", e <= 1, "err %.3g", e);
    e = fmax(err_ratio(a, r2, n, 1e-6, 1e-5), err_ratio(b, r3, n, 1e-6, 1e-5));
    check("swiglu_bwd", e <= 1, "err %.3g", e);
    be->add(&Q, dA, dg, n);
    be->scale(&Q, dA, 0.5f, n);
    dget(h, dA, n);
    for (size_t i = 0; i < n; i++) r1[i] = ((double)a[i] + g[i]) * 0.5;
    e = err_ratio(h, r1, n, 1e-7, 1e-6);
    check("add + scale", e <= 1, "err %.3g", e);
    double ss = be->sumsq(&Q, dg, n), rs = 0;
    for (size_t i = 0; i < n; i++) rs += (double)g[i] * g[i];
    check("sumsq", fabs(ss - rs) <= 1e-12 * rs, "rel err %.3g", fabs(ss - rs) / rs);
    /* embedding: repeated tokens add in token order, as the CPU */
    const int T = 50, dim = 130, vocab = 7;
    int32_t tok[50];
    for (int t = 0; t < T; t++) tok[t] = (t * 5) % vocab;
    float *tab = xmalloc(4 * vocab * dim), *dout = xmalloc(4 * T * dim), *outv = xmalloc(4 * T * dim), *dtab = xmalloc(4 * vocab * dim);
    fill(tab, (size_t)vocab * dim, 1), fill(dout, (size_t)T * dim, 1);
    ops_tensor dT = dputf(tab, (size_t)vocab * dim), dtk = dput(tok, T, OPS_I32), dOut = dputf(NULL, (size_t)T * dim), dDO = dputf(dout, (size_t)T * dim);
    be->embedding_fwd(&Q, dOut, dT, dtk, T, dim);
    dget(outv, dOut, (size_t)T * dim);
    bool eq = true;
    for (int t = 0; t < T; t++) eq &= memcmp(outv + t * dim, tab + tok[t] * dim, 4 * dim) == 0;
    check("embedding_fwd", eq, "%g", 0);
    be->embedding_bwd(&Q, dT, dDO, dtk, T, dim);
    dget(dtab, dT, (size_t)vocab * dim);
    for (int t = 0; t < T; t++)
        for (int c = 0; c < dim; c++) tab[tok[t] * dim + c] += dout[t * dim + c]; /* the CPU's order */
    check("embedding_bwd bitwise the CPU's order", memcmp(dtab, tab, 4 * vocab * dim) == 0, "%g", 0);
    /* bf16 mirror: exact words convert, inexact ones are reported */
    uint16_t *m16 = xmalloc(2 * n);
    for (size_t i = 0; i < n; i++) a[i] = from_bf16(to_bf16(g[i]));
    ops_tensor dm = dput(NULL, n, OPS_BF16), dex = dputf(a, n);
    bool ok1 = be->bf16_mirror(&Q, dm, dex, n, true);
    dget(m16, dm, n);
    bool same = true;
    for (size_t i = 0; i < n; i++) same &= m16[i] == to_bf16(a[i]);
    bool ok2 = be->bf16_mirror(&Q, dm, dg, n, false);
    check("bf16_mirror exact / inexact", ok1 && same && !ok2, "%g", 0);
    dfree(dg), dfree(du), dfree(ddh), dfree(dH), dfree(dA), dfree(dB), dfree(dT), dfree(dtk), dfree(dOut), dfree(dDO), dfree(dm), dfree(dex);
    free(g), free(u), free(dh), free(h), free(a), free(b), free(r1), free(r2), free(r3), free(tab), free(dout), free(outv), free(dtab), free(m16);
}

static void test_adamw(void) {
    const size_t n = 200003;
    float *p = xmalloc(4 * n), *g = xmalloc(4 * n), *m = xcalloc(n, 4), *v = xcalloc(n, 4), *out = xmalloc(4 * n);
    fill(p, n, 1), fill(g, n, 0.1f);
    ops_segment segs[3] = {{0, 1000, true}, {1000, 150000, false}, {151000, n - 151000, true}};
    ops_adamw_step a = {.step = 1, .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    ops_tensor dp = dputf(p, n), dg = dputf(g, n), dm = dputf(m, n), dv = dputf(v, n);
    for (long step = 1; step <= 3; step++) {
        a.step = step;
        be->adamw(&Q, dp, dg, dm, dv, segs, 3, &a);
        /* the CPU's formula (algo/optim.c adamw_step), fp32 element math */
        const double bias1 = 1.0 - pow((double)a.beta1, (double)step), bias2 = 1.0 - pow((double)a.beta2, (double)step);
        const float step_size = (float)((double)a.lr / bias1), b2s = (float)sqrt(bias2);
        for (int s = 0; s < 3; s++) {
            const float keep = segs[s].decay ? (float)(1.0 - (double)a.lr * a.weight_decay) : 1.0f;
            for (size_t i = segs[s].offset; i < segs[s].offset + segs[s].numel; i++) {
                float gi = g[i], pi = p[i] * keep;
                float mi = m[i] + (1.0f - a.beta1) * (gi - m[i]);
                float vi = a.beta2 * v[i] + (1.0f - a.beta2) * (gi * gi);
                float den = sqrtf(vi) / b2s + a.eps;
                p[i] = pi - step_size * (mi / den);
                m[i] = mi, v[i] = vi;
            }
        }
    }
    dget(out, dp, n);
    check("adamw bitwise the CPU formula (3 steps)", memcmp(out, p, 4 * n) == 0, "%g", 0);
    dfree(dp), dfree(dg), dfree(dm), dfree(dv);
    free(p), free(g), free(m), free(v), free(out);
}

static void test_vocab(void) {
    const int rows = 6, V = 3001, k = 20, T = 10, r0 = 2;
    size_t n = (size_t)rows * V;
    float *x = xmalloc(4 * n), *g = xmalloc(4 * n), *rowv = xmalloc(4 * V);
    fill(x, n, 4);
    for (int v = 0; v < V; v += 3) x[V + v] = 1.0f; /* ties in row 1 */
    int32_t target[10], slot[10];
    float dlogp[10], logp[10];
    for (int t = 0; t < T; t++) target[t] = t % 4 == 3 ? -1 : (t * 977) % V, dlogp[t] = 0.1f * (t + 1), slot[t] = t % 3 == 0 ? -1 : t % 4;
    ops_tensor dx = dputf(x, n), dt = dput(target, T, OPS_I32), dd = dputf(dlogp, T), dl = dputf(NULL, T), dcl = dputf(NULL, rows), dcs = dputf(NULL, rows);
    ops_tensor ds = dput(slot, T, OPS_I32);
    /* LOGP forward + gradient */
    ops_vocab_op op = {.kind = VOCAB_LOGP, .want_grad = true, .V = V, .target = dt, .logp = dl, .dlogp = dd, .chunk_logp = dcl, .chunk_lse = dcs};
    be->vocab_rows(&Q, &op, dx, r0, rows);
    dget(logp, dl, T), dget(g, dx, n);
    double el = 0, eg = 0;
    for (int i = 0; i < rows; i++) {
        const float *xr = x + (size_t)i * V;
        int t = r0 + i;
        double mx = -INFINITY, s = 0;
        for (int v = 0; v < V; v++) mx = fmax(mx, xr[v]);
        for (int v = 0; v < V; v++) s += exp(xr[v] - mx);
        double lse = mx + log(s), lp = target[t] >= 0 ? xr[target[t]] - lse : 0;
        el = fmax(el, fabs(logp[t] - lp));
        for (int v = 0; v < V; v++) {
            double r = target[t] < 0 ? 0 : dlogp[t] * ((v == target[t]) - exp(xr[v] - lse));
            eg = fmax(eg, fabs(g[(size_t)i * V + v] - r));
        }
    }
    check("vocab_rows logp", el < 1e-5, "max err %.3g", el);
    check("vocab_rows logp grad", eg < 1e-6, "max err %.3g", eg);
    /* teacher full + top-k, then fkl full + top-k against losses.c */
    const int n_slots = 4;
    float *full = xmalloc(4 * (size_t)n_slots * V), *tkl = xmalloc(4 * n_slots * k), *ref = xmalloc(4 * V), *reft = xmalloc(4 * k);
    int32_t *tki = xmalloc(4 * n_slots * k), refi[20];
    be->upload(&Q, dx.p, x, 4 * n);
    ops_tensor dfull = dputf(NULL, (size_t)n_slots * V), dtki = dput(NULL, (size_t)n_slots * k, OPS_I32), dtkl = dputf(NULL, (size_t)n_slots * k);
    ops_tensor dkl = dput(NULL, T, OPS_F64);
    ops_vocab_op tf = {.kind = VOCAB_TEACHER_FULL, .V = V, .row_slot = ds, .full_logp = dfull};
    ops_vocab_op tk = {.kind = VOCAB_TEACHER_TOPK, .V = V, .k = k, .row_slot = ds, .topk_ids = dtki, .topk_logp = dtkl};
    be->vocab_rows(&Q, &tf, dx, r0, rows);
    be->vocab_rows(&Q, &tk, dx, r0, rows);
    dget(full, dfull, (size_t)n_slots * V), dget(tki, dtki, (size_t)n_slots * k), dget(tkl, dtkl, (size_t)n_slots * k);
    double ef = 0, et = 0;
    bool ids_eq = true;
    for (int i = 0; i < rows; i++) {
        int sl = slot[r0 + i];
        if (sl < 0) continue;
        cpu_log_softmax_row(x + (size_t)i * V, V, ref);
        for (int v = 0; v < V; v++) ef = fmax(ef, fabs(full[(size_t)sl * V + v] - ref[v]));
        cpu_topk_logprobs_row(x + (size_t)i * V, V, k, refi, reft);
        for (int j = 0; j < k; j++) {
            ids_eq &= refi[j] == tki[sl * k + j];
            et = fmax(et, fabs(reft[j] - tkl[sl * k + j]));
        }
    }
    check("vocab_rows teacher_full", ef < 1e-5, "max err %.3g", ef);
    check("vocab_rows teacher_topk ids (CPU order)", ids_eq, "%g", 0);
    check("vocab_rows teacher_topk logp", et < 1e-5, "max err %.3g", et);
    for (int kind = 0; kind < 2; kind++) {
        float scale = 0.25f;
        ops_vocab_op f = {.kind = kind ? VOCAB_FKL_TOPK : VOCAB_FKL_FULL, .want_grad = true, .V = V, .k = k, .scale = scale,
                          .row_slot = ds, .full_logp = dfull, .topk_ids = dtki, .topk_logp = dtkl, .row_kl = dkl};
        be->upload(&Q, dx.p, x, 4 * n);
        be->vocab_rows(&Q, &f, dx, r0, rows);
        double kl[10];
        dget(g, dx, n), dget(kl, dkl, T);
        double ek = 0, eg2 = 0;
        for (int i = 0; i < rows; i++) {
            int sl = slot[r0 + i];
            memcpy(rowv, x + (size_t)i * V, 4 * V);
            if (sl < 0) {
                for (int v = 0; v < V; v++) eg2 = fmax(eg2, fabs(g[(size_t)i * V + v]));
                continue;
            }
            double rk = kind ? cpu_fkl_topk_row(tki + sl * k, tkl + sl * k, k, rowv, V, scale, rowv)
                             : cpu_fkl_full_row(full + (size_t)sl * V, rowv, V, scale, rowv);
            ek = fmax(ek, fabs(kl[r0 + i] - rk) / (1e-6 + fabs(rk)));
            for (int v = 0; v < V; v++) eg2 = fmax(eg2, fabs(g[(size_t)i * V + v] - rowv[v]));
        }
        check(kind ? "vocab_rows fkl_topk kl" : "vocab_rows fkl_full kl", ek < 1e-6, "rel err %.3g", ek);
        check(kind ? "vocab_rows fkl_topk grad" : "vocab_rows fkl_full grad", eg2 < 1e-7, "max err %.3g", eg2);
    }
    dfree(dx), dfree(dt), dfree(dd), dfree(dl), dfree(dcl), dfree(dcs), dfree(ds), dfree(dfull), dfree(dtki), dfree(dtkl), dfree(dkl);
    free(x), free(g), free(rowv), free(full), free(tkl), free(ref), free(reft), free(tki);
}

static void test_sample(void) {
    const int n = 8, V = 5003;
    float *x = xmalloc(4 * (size_t)n * V);
    for (int i = 0; i < n; i++)
        for (int v = 0; v < V; v++) x[(size_t)i * V + v] = i % 2 ? (float)floor(3 * rng_next_normal(&R)) : (float)(2 * rng_next_normal(&R));
    ops_tensor dx = dputf(x, (size_t)n * V);
    be->reserve(&Q, 0, n, V, 0);
    uint64_t ids[8], pos[8];
    for (int i = 0; i < n; i++) ids[i] = 100 + i, pos[i] = 7 * i;
    const ops_sampling cases[] = {{0, 0, 1, 1}, {1.0f, 0, 1, 2}, {0.7f, 50, 1, 3}, {1.3f, 0, 0.9f, 4}, {0.8f, 40, 0.7f, 5}, {1.0f, 0, 0.3f, 6}};
    const char *names[] = {"greedy", "temperature", "top-k", "top-p", "top-k + top-p", "top-p 0.3"};
    sampler s;
    sampler_init(&s, V);
    for (size_t c = 0; c < S2D_ARRAY_LEN(cases); c++) {
        int same = 0;
        double elp = 0;
        for (int rep = 0; rep < 20; rep++) {
            for (int i = 0; i < n; i++) pos[i] = 7 * i + 1000 * rep;
            int32_t got[8];
            float lp[8];
            be->sample(&Q, dx, n, V, &cases[c], ids, pos, got, lp);
            for (int i = 0; i < n; i++) {
                sampler_params sp = {cases[c].temperature, cases[c].top_k, cases[c].top_p, cases[c].seed};
                float rl;
                int32_t r = sampler_sample(&s, &sp, x + (size_t)i * V, ids[i], pos[i], &rl);
                same += r == got[i];
                if (r == got[i]) elp = fmax(elp, fabs(rl - lp[i]));
            }
        }
        char name[64];
        snprintf(name, sizeof name, "sample %s: ids equal the CPU's", names[c]);
        check(name, same == 20 * n, "%.0f of 160", (double)same);
        snprintf(name, sizeof name, "sample %s: logp", names[c]);
        check(name, elp < 1e-4, "max err %.3g", elp);
    }
    sampler_free(&s);
    dfree(dx);
    free(x);
}

int main(void) {
    int nd = be->device_count();
    if (nd == 0) {
        printf("cuda_selftest: no CUDA device visible: skipped\n");
        return 77;
    }
    char desc[256];
    be->describe(0, desc, sizeof desc);
    printf("device 0: %s\n", desc);
    s2d_err err;
    CHECK_OK(be->queue_init(&Q, 0, &err), &err);
    Q.be = be;
    be->reserve(&Q, 256, 64, 5003, (size_t)1 << 22);
    rng_stream_init(&R, 1234, 0);
    test_matmul();
    test_linear_rows();
    test_rmsnorm_rope();
    test_attention(64, 4, 2);
    test_attention(128, 16, 8);
    test_attention(80, 6, 6);
    test_attention(256, 8, 1);
    test_decode_long(128, 16, 8);
    test_decode_long(64, 32, 4);
    test_elementwise();
    test_adamw();
    test_vocab();
    test_sample();
    be->sync(&Q);
    be->queue_free(&Q);
    printf("RESULT cuda_selftest %d %d\n", passed, failed);
    return failed ? 1 : 0;
}
